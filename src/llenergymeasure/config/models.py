"""Pydantic v2 models of experiment and campaign files.

These models are the single source of truth for what a config may contain: the
valid parameters of each backend are read from them (see ``introspection``),
never from a hand-kept list.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llenergymeasure.contracts.identity import safe_name_problem
from llenergymeasure.contracts.services import PINNED_ENGINE_VERSIONS

BACKENDS: tuple[str, ...] = ("pytorch", "vllm", "tensorrt")
Backend = Literal["pytorch", "vllm", "tensorrt"]
Precision = Literal["float32", "float16", "bfloat16"]
Order = Literal["interleaved", "shuffled", "grouped"]


def _check_safe_name(value: str) -> str:
    """Names become file and directory names (contracts/identity.py)."""
    problem = safe_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


SafeName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_check_safe_name)]

# Where the services mount the models (docker/compose.yml.j2): a campaign's local model
# paths must lie under one of these, since nothing else is there inside the containers.
DEFAULT_MODEL_ROOTS: tuple[str, ...] = ("/models",)
# A Hugging Face hub id: 'name' or 'org/name', each part starting with a letter or digit.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _check_model_root(value: str) -> str:
    """An allowed model root: absolute, without '..', normalised ('/models/' -> '/models')."""
    root = PurePosixPath(value)
    if not root.is_absolute() or ".." in root.parts:
        raise ValueError(f"{value!r} must be an absolute path without '..'")
    return str(root)


ModelRoot = Annotated[str, AfterValidator(_check_model_root)]


def model_path_problem(path: str, roots: tuple[str, ...] | list[str]) -> str | None:
    """Why `path` may not be a campaign's model path, or None when it may.

    Accepted: an absolute path under one of `roots`, or a hub id (``org/name``). A
    relative path is refused: in a service it would resolve against the container's
    working directory (the state dir), not against the models mount.
    """
    if "\x00" in path:
        return f"{path!r} contains a NUL character"
    if not path.startswith("/"):
        if _HUB_ID.fullmatch(path) and ".." not in path:
            return None
        return (
            f"{path!r} is a relative path (or not a valid hub id 'org/name'); "
            f"give an absolute path under {', '.join(roots)}"
        )
    absolute = PurePosixPath(path)
    if ".." in absolute.parts:
        return f"{path!r} must not contain '..'"
    if any(absolute.is_relative_to(root) for root in roots):
        return None
    return (
        f"{path!r} is outside the allowed model roots {', '.join(roots)} (where the "
        "services mount models; add a root with the campaign's allowed_model_roots)"
    )


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, and so are wrong types.

    Strict: YAML already gives numbers, booleans and strings their types, so a value
    of another type (``true`` for a count, ``"yes"`` for a flag, ``"3"`` for a
    number) is a mistake to report, not something to convert.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


class ModelSpec(StrictModel):
    path: str = Field(min_length=1, description="Local path (under a mounted models dir) or hub id")
    revision: str | None = None
    trust_remote_code: bool = False


class DecoderConfig(StrictModel):
    max_new_tokens: int = Field(32, ge=1, le=32768)
    min_new_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 disables top-k")
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class DatasetConfig(StrictModel):
    name: str = Field(
        "builtin:short-prompts",
        min_length=1,
        description="builtin:NAME, or a path to a JSONL file (field 'prompt') or a text file",
    )
    num_prompts: int = Field(20, ge=1, le=100000)


class MeasurementConfig(StrictModel):
    warmup_prompts: int = Field(5, ge=0)
    min_window_seconds: float = Field(
        5.0, ge=0.0, description="The prompt set repeats until the window lasts this long"
    )
    max_window_repeats: int = Field(1000, ge=1)
    baseline_seconds: float = Field(30.0, ge=0.0, description="Idle baseline length per GPU")
    sample_interval_ms: int = Field(100, ge=10, le=10000)


# Marks a backend parameter used only at generation time: a loaded model serves any value,
# so it is left out of the model load key (runner/loadkey.py). Unmarked ones are load-time.
RUNTIME_PARAMETER: dict[str, Any] = {"runtime": True}


class PyTorchConfig(StrictModel):
    batch_size: int = Field(1, ge=1, le=4096, json_schema_extra=RUNTIME_PARAMETER)
    attn_implementation: Literal["eager", "sdpa"] | None = None
    use_cache: bool = Field(True, json_schema_extra=RUNTIME_PARAMETER)
    torch_compile: bool = False
    # Server mode only (`transformers serve --continuous-batching`, runner/servers.py): the
    # paged KV cache's size; its defaults size it from GPU memory, too large for a CPU host.
    cb_num_blocks: int | None = Field(
        None, ge=1, description="server mode: KV cache blocks of continuous batching"
    )
    cb_block_size: int | None = Field(
        None, ge=1, description="server mode: tokens per KV cache block"
    )
    cb_max_batch_tokens: int | None = Field(
        None, ge=1, description="server mode: most tokens in one continuous batch"
    )


# The vLLM versions a campaign can measure, each with its own image (scripts/build-images.sh
# --engine-version) and engine-argument fixture read from its wheel (tests/fixtures/engines/):
# 0.11.1 is ML.ENERGY v3's (the pinned one: the plain `vllm` service), 0.33.0 today's,
# served by `vllm-0.33.0` (contracts/services.py).
VLLM_VERSIONS = ("0.11.1", "0.33.0")
# Section keys a version's EngineArgs no longer has (tests check them against the fixtures).
VLLM_KEYS_GONE_IN: dict[str, frozenset[str]] = {"0.33.0": frozenset({"swap_space"})}


class VLLMConfig(StrictModel):
    version: Literal["0.11.1", "0.33.0"] = Field(
        PINNED_ENGINE_VERSIONS["vllm"],
        description="vLLM version to measure with (an axis: `vllm.version` in a grid); each "
        "version runs in its own service, on the image built for it",
    )
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    enforce_eager: bool = False
    # vLLM 0.11 caches prefixes by default; the window repeats its prompts, so caching would
    # measure cache hits, not the work other engines do. Off unless asked for.
    enable_prefix_caching: bool = False
    enable_chunked_prefill: bool | None = None
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    block_size: int | None = Field(None, ge=1)
    swap_space: float | None = Field(None, ge=0, description="vLLM before 0.33 only")

    @model_validator(mode="after")
    def _keys_of_this_version(self) -> VLLMConfig:
        gone = sorted(
            k for k in VLLM_KEYS_GONE_IN.get(self.version, ()) if getattr(self, k) is not None
        )
        if gone:
            raise ValueError(
                f"{', '.join(gone)}: vLLM {self.version}'s EngineArgs has no such setting; "
                "unset it for this version"
            )
        return self


class TensorRTConfig(StrictModel):
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    max_batch_size: int | None = Field(None, ge=1)
    max_num_tokens: int | None = Field(None, ge=1)
    max_seq_len: int | None = Field(None, ge=1)
    max_input_len: int | None = Field(None, ge=1)
    max_beam_width: int = Field(1, ge=1)
    kv_cache_free_gpu_memory_fraction: float | None = Field(None, gt=0.0, le=1.0)
    # KV cache block reuse (TensorRT-LLM's prefix caching) is on by default in the engine;
    # off here for the same reason as vllm.enable_prefix_caching.
    enable_block_reuse: bool = False
    quantization: str | None = Field(
        None, description="Refused: TensorRT-LLM's PyTorch flow does not quantize on the fly"
    )
    engine_dir: str | None = Field(
        None, description="Prebuilt engine; built from the model if unset"
    )

    @field_validator("quantization", mode="after")
    @classmethod
    def _no_on_the_fly_quantization(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                f"{value!r} is not supported: TensorRT-LLM's PyTorch flow does not quantize "
                "on the fly; give a pre-quantized checkpoint (e.g. a ModelOpt FP8 export) "
                "as model.path and leave tensorrt.quantization unset"
            )
        return value


class GpuKnobsConfig(StrictModel):
    """GPU settings applied on the host through NVML before the experiment (docs/knobs.md).

    Null leaves the GPU as it is. The bounds here only catch typos; the card's own supported
    range is checked on the host before any experiment runs.
    """

    sm_clock_mhz: int | None = Field(
        None, ge=100, le=10000, description="Lock the SM (graphics) clock at this MHz"
    )
    mem_clock_mhz: int | None = Field(
        None, ge=100, le=50000, description="Lock the memory clock at this MHz"
    )
    power_limit_w: int | None = Field(
        None, ge=1, le=5000, description="Set the board power limit to this many watts"
    )

    def is_set(self) -> bool:
        return any(value is not None for value in self.model_dump().values())


class SloConfig(StrictModel):
    """Latency deadlines a served request must meet (both) to count as good."""

    ttft_ms: float = Field(gt=0.0, description="Time to first token deadline, ms")
    itl_ms: float = Field(gt=0.0, description="Inter-token latency deadline (p90 per request), ms")


class LoadConfig(StrictModel):
    """How requests reach the engine (docs/server-mode.md).

    offline: today's batches from the prompt set. server: the engine's own OpenAI-compatible
    server, loaded by a load generator at a request rate or a concurrency, measured in its
    steady-state window.
    """

    mode: Literal["offline", "server"] = "offline"
    request_rate: float | Literal["inf"] | None = Field(
        None, description="Requests/s with seeded Poisson (gamma) arrivals; 'inf' sends all at once"
    )
    max_concurrency: int | None = Field(
        None, ge=1, description="Closed loop with this many requests in flight"
    )
    burstiness: float = Field(1.0, gt=0.0, description="Gamma shape of the gaps; 1.0 is Poisson")
    num_requests: int = Field(400, ge=1, le=1_000_000)
    warmup_requests: int = Field(20, ge=0)
    slo: SloConfig | None = Field(None, description="Deadlines for SLO attainment and goodput")
    min_window_seconds: float = Field(
        20.0, ge=0.0, description="A steady-state window shorter than this is flagged unstable"
    )
    min_in_flight_fraction: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="Under max_concurrency, a mean in-flight count below this x the target "
        "is flagged unstable",
    )
    seed: int = Field(0, description="Seed of the arrival times and the request order")

    @field_validator("request_rate", mode="after")
    @classmethod
    def _positive_rate(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and value <= 0.0:
            raise ValueError(f"{value!r} must be above 0 (requests/s), or 'inf'")
        return value

    @model_validator(mode="after")
    def _one_load_shape(self) -> LoadConfig:
        given = [k for k in ("request_rate", "max_concurrency") if getattr(self, k) is not None]
        if self.mode == "offline":
            server_only = given + (["slo"] if self.slo is not None else [])
            if server_only:
                raise ValueError(f"{', '.join(server_only)}: only for load.mode 'server'")
            return self
        if len(given) != 1:
            raise ValueError(
                "give exactly one of request_rate or max_concurrency for load.mode 'server'"
                + (f" (both given: {', '.join(given)})" if given else "")
            )
        if self.num_requests <= self.warmup_requests:
            raise ValueError(
                f"num_requests ({self.num_requests}) must be above warmup_requests "
                f"({self.warmup_requests})"
            )
        return self


# Precisions a backend refuses, and why.
UNSUPPORTED_PRECISIONS: dict[str, dict[str, str]] = {
    "tensorrt": {
        "float32": "TensorRT-LLM's PyTorch flow runs float16 or bfloat16; set one of them",
    },
}

BACKEND_SECTIONS: dict[str, type[StrictModel]] = {
    "pytorch": PyTorchConfig,
    "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig,
}


class ExperimentConfig(StrictModel):
    """One experiment configuration: what a single `lem experiment` runs."""

    config_name: SafeName
    backend: Backend
    model: ModelSpec
    precision: Precision = "float32"
    decoder: DecoderConfig = DecoderConfig()
    dataset: DatasetConfig = DatasetConfig()
    measurement: MeasurementConfig = MeasurementConfig()
    pytorch: PyTorchConfig | None = None
    vllm: VLLMConfig | None = None
    tensorrt: TensorRTConfig | None = None
    gpu: GpuKnobsConfig | None = None
    load: LoadConfig = LoadConfig()

    @field_validator("precision", mode="after")
    @classmethod
    def _precision_fits_backend(cls, value: Precision, info: ValidationInfo) -> Precision:
        backend = info.data.get("backend", "")
        reason = UNSUPPORTED_PRECISIONS.get(backend, {}).get(value)
        if reason is not None:
            raise ValueError(f"{value!r} is not supported by backend {backend!r}: {reason}")
        return value

    @field_validator("pytorch", "vllm", "tensorrt", mode="after")
    @classmethod
    def _section_matches_backend(cls, value: Any, info: ValidationInfo) -> Any:
        backend = info.data.get("backend")
        if value is not None and backend is not None and info.field_name != backend:
            raise ValueError(
                f"section '{info.field_name}' given, but backend is {backend!r}: "
                f"only the '{backend}' section is allowed"
            )
        if value is None and info.field_name == backend:
            return BACKEND_SECTIONS[backend]()
        return value

    def backend_section(self) -> StrictModel:
        return getattr(self, self.backend)


class GridSpec(StrictModel):
    base: dict[str, Any]
    vary: dict[str, list[Any]] = Field(min_length=1)


class ExecutionConfig(StrictModel):
    cycles: int = Field(3, ge=1, le=1000)
    order: Order = "interleaved"
    seed: int = 42
    warmup_prompts: int | None = Field(None, ge=0, description="Overrides every config's warmup")
    config_gap_seconds: float = Field(0.0, ge=0.0)
    cycle_gap_seconds: float = Field(0.0, ge=0.0)
    gap_mode: Literal["fixed", "thermal"] = "fixed"
    thermal_temp_tolerance_c: float = Field(2.0, gt=0.0)
    thermal_power_tolerance_pct: float = Field(10.0, gt=0.0)
    knob_settle_seconds: float = Field(
        60.0, ge=0.0, description="Least gap after a GPU knob change (thermal: the most waited)"
    )


class HealthCheckConfig(StrictModel):
    enabled: bool = True
    gpu_memory_threshold_pct: float = Field(90.0, gt=0.0, le=100.0)
    max_restarts: int = Field(3, ge=0)


class ColdStartConfig(StrictModel):
    force_cold_start: bool = False


class FailuresConfig(StrictModel):
    retry_failed_on_resume: bool = True


class CampaignConfig(StrictModel):
    """A campaign file. `configs` entries are inline configs or paths to config files.

    Entries are validated one by one as `ExperimentConfig` by the loader, so that an
    error names `configs[i]` and the file it came from rather than a union mismatch.
    """

    campaign_name: SafeName
    configs: list[dict[str, Any] | str] | None = None
    grid: GridSpec | None = None
    max_configs: int = Field(1000, ge=1)
    allowed_model_roots: list[ModelRoot] = Field(
        default_factory=lambda: list(DEFAULT_MODEL_ROOTS),
        min_length=1,
        description="Absolute dirs where the services find models; model.path must be under one",
    )
    execution: ExecutionConfig = ExecutionConfig()
    health_check: HealthCheckConfig = HealthCheckConfig()
    cold_start: ColdStartConfig = ColdStartConfig()
    failures: FailuresConfig = FailuresConfig()

    @field_validator("grid", mode="after")
    @classmethod
    def _configs_or_grid(cls, value: GridSpec | None, info: ValidationInfo) -> GridSpec | None:
        if "configs" not in info.data:  # 'configs' is invalid: that error says enough
            return value
        has_configs = bool(info.data["configs"])
        if has_configs == (value is not None):
            raise ValueError("give exactly one of 'configs' (a non-empty list) or 'grid'")
        return value
