"""vLLM backend: the offline `vllm.LLM` API (pinned: vllm 0.11.1, see pyproject.toml).

vLLM is imported inside `load` only, so this module (and its translation and
parsing, which the unit tests cover) imports on a machine without vLLM.

Per-request timings come from `RequestOutput.metrics`, a V1 `RequestStateStats`, which
vLLM fills only when stats logging is on (`disable_log_stats=False`, set here) and
only from 0.11.1 on: 0.11.0's output processor builds `RequestOutput` without it
(tests/fixtures/engines/vllm-0.11.*.json, read from the wheels by
scripts/inspect-engines.py). `first_token_latency` is seconds from arrival to the
first token; `first_token_ts` / `last_token_ts` are the engine core's monotonic
clock. A request without them has null latency, TTFT and inter-token latency, with
a warning (engine_outputs.py).
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, VLLMConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import not_installed_message, refuse_unknown_fields
from llenergymeasure.runner.backends.base import BatchOutcome
from llenergymeasure.runner.backends.engine_outputs import RequestTiming, parse_engine_outputs
from llenergymeasure.runner.backends.offline_engine import OfflineEngine

# The config's precision names are vLLM's `dtype` values.
VLLM_DTYPES: dict[str, str] = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
# vLLM before 0.8 rejects top_k=0; -1 means "all tokens" in every version.
ALL_TOKENS_TOP_K = -1


def engine_args(config: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM(...)` (vLLM's EngineArgs) for this config.

    The `vllm` section's keys are EngineArgs names; unset (None) ones keep vLLM's default.
    """
    section = config.vllm or VLLMConfig()
    args: dict[str, Any] = {
        "model": config.model.path,
        "trust_remote_code": config.model.trust_remote_code,
        "dtype": VLLM_DTYPES[config.precision],
        "seed": config.decoder.seed,
        "disable_log_stats": False,  # without stats, RequestOutput.metrics stays None
    }
    if config.model.revision is not None:
        args["revision"] = config.model.revision
    args.update(section.model_dump(exclude_none=True, exclude={"version"}))
    return args


def check_engine_args(args: dict[str, Any], engine_args_class: Any, version: str) -> None:
    """Refuse a setting the installed vLLM's `EngineArgs` lacks (`swap_space` is gone in
    0.33: `LLM(swap_space=...)` raises TypeError there), naming it and the version."""
    hint = " (a setting of another vLLM version: leave it unset for this one)"
    refuse_unknown_fields(args, engine_args_class, f"vLLM {version}'s EngineArgs", hint)


def check_version(config: ExperimentConfig, installed: str) -> None:
    """The config's `vllm.version` is the one installed here: each version has its image."""
    wanted = (config.vllm or VLLMConfig()).version
    if installed.split("+")[0] != wanted:
        raise ExperimentError(
            f"vllm.version is {wanted} but this service runs vLLM {installed}: its image is "
            f"built by scripts/build-images.sh --backend vllm --engine-version {wanted}"
        )


def sampling_params(config: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams(...)`; temperature 0 is vLLM's greedy."""
    decoder = config.decoder
    params: dict[str, Any] = {
        "n": 1,
        "max_tokens": decoder.max_new_tokens,
        "temperature": decoder.temperature,
        "seed": decoder.seed,
    }
    if not decoder.greedy:
        params["top_p"] = decoder.top_p
        params["top_k"] = decoder.top_k if decoder.top_k > 0 else ALL_TOKENS_TOP_K
    if decoder.min_new_tokens is not None:
        params["min_tokens"] = decoder.min_new_tokens
    return params


# The `RequestStateStats` attributes `request_timing` reads (checked against the wheel).
STATS_FIELDS = ("first_token_latency", "first_token_ts", "last_token_ts")


def request_timing(metrics: Any) -> RequestTiming | None:
    """Timing from a V1 `RequestStateStats`; None when absent or not filled in."""
    if metrics is None or not all(hasattr(metrics, name) for name in STATS_FIELDS):
        return None
    ttft = float(metrics.first_token_latency or 0.0)
    if ttft <= 0.0:
        return None
    decode = max(0.0, float(metrics.last_token_ts) - float(metrics.first_token_ts))
    return RequestTiming(latency_s=ttft + decode, ttft_s=ttft, decode_s=decode)


def parse_outputs(outputs: list[Any]) -> BatchOutcome:
    """Records from `vllm.RequestOutput`s, in prompt order (`LLM.generate` keeps it)."""
    return parse_engine_outputs(
        outputs, lambda output: request_timing(getattr(output, "metrics", None)), "vLLM"
    )


class LoadedVLLM(OfflineEngine):
    """A `vllm.LLM` engine ready to generate."""

    engine_name = "vLLM"
    package = "vllm"
    # RequestStateStats.first_token_latency: from the request's arrival at the frontend
    # (LLM.generate adding it) to its first token.
    ttft_definition = "frontend_arrival"

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        llm = self._loaded()
        params = self._module.SamplingParams(**sampling_params(config))
        return parse_outputs(list(llm.generate(prompts, params, use_tqdm=False)))

    def _shut_down(self, llm: Any) -> None:
        """vLLM has no single call for it: stop the engine-core process, then the
        distributed state this process set up."""
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        _destroy_distributed_state()


def _destroy_distributed_state() -> None:
    with contextlib.suppress(ImportError):
        from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def import_engine() -> ModuleType:
    """vLLM itself (minutes when cold; backends.import_backend times it apart from the load)."""
    try:
        import vllm
    except ImportError as exc:
        raise ExperimentError(not_installed_message("vllm", "vllm")) from exc
    return vllm


def load(config: ExperimentConfig) -> LoadedVLLM:
    """Start a vLLM engine for the config's model; vLLM missing is an ExperimentError."""
    vllm = import_engine()
    check_version(config, vllm.__version__)
    from vllm.engine.arg_utils import EngineArgs

    args = engine_args(config)
    check_engine_args(args, EngineArgs, vllm.__version__)
    return LoadedVLLM(vllm.LLM(**args), vllm)
