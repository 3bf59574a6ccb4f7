"""vLLM backend: the offline `vllm.LLM` API.

vLLM is imported inside `load` only, so this module (and its translation and
parsing, which the unit tests cover) imports on a machine without vLLM.

Per-request timings come from `RequestOutput.metrics`, which vLLM fills only when
stats logging is on (`disable_log_stats=False`, set here). Two shapes exist:
- vLLM V0 `RequestMetrics`: wall-clock `arrival_time`, `first_token_time`,
  `last_token_time` (and `finished_time`);
- vLLM V1 `RequestStateStats`: `first_token_latency` (s after arrival) and the engine
  core's monotonic `first_token_ts` / `last_token_ts`.
When neither is present, a request's latency is the batch's wall-clock time, with
a warning, and TTFT / inter-token latency are left unmeasured (engine_outputs.py).
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, VLLMConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import not_installed_message
from llenergymeasure.runner.backends.base import BatchOutcome
from llenergymeasure.runner.backends.engine_outputs import RequestTiming, parse_engine_outputs

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
    args.update(section.model_dump(exclude_none=True))
    return args


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


def request_timing(metrics: Any) -> RequestTiming | None:
    """Timing from either shape of vLLM's request metrics; None when not populated."""
    if metrics is None:
        return None
    if hasattr(metrics, "first_token_latency"):  # V1 RequestStateStats
        ttft = float(metrics.first_token_latency or 0.0)
        if ttft <= 0.0:
            return None
        decode = max(0.0, float(metrics.last_token_ts) - float(metrics.first_token_ts))
        return RequestTiming(latency_s=ttft + decode, ttft_s=ttft, decode_s=decode)
    first = getattr(metrics, "first_token_time", None)
    if first is None:  # V0 RequestMetrics without timestamps
        return None
    arrival, last = float(metrics.arrival_time), float(metrics.last_token_time)
    finished = getattr(metrics, "finished_time", None)
    end = float(finished) if finished is not None else last
    return RequestTiming(
        latency_s=end - arrival, ttft_s=float(first) - arrival, decode_s=last - first
    )


def parse_outputs(outputs: list[Any], batch_seconds: float) -> BatchOutcome:
    """Records from `vllm.RequestOutput`s, in prompt order (`LLM.generate` keeps it)."""
    return parse_engine_outputs(
        outputs,
        batch_seconds,
        lambda output: request_timing(getattr(output, "metrics", None)),
        "vLLM",
    )


class LoadedVLLM:
    """A `vllm.LLM` engine ready to generate."""

    device = "cuda"

    def __init__(self, llm: Any, vllm_module: Any) -> None:
        self._llm: Any = llm
        self._vllm = vllm_module

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        if self._llm is None:
            raise ExperimentError("the vLLM engine was unloaded: load it again to generate")
        params = self._vllm.SamplingParams(**sampling_params(config))
        started = time.perf_counter()
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        return parse_outputs(list(outputs), time.perf_counter() - started)

    def synchronize(self) -> None:
        # LLM.generate returns only when every request is done; this also waits for the device.
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def unload(self) -> None:
        """Shut the engine down and release its GPU memory (vLLM has no single call for it)."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()  # V1: stops the engine-core process that holds the GPU
        del llm
        _destroy_distributed_state()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def versions(self) -> dict[str, str]:
        import torch

        return {"vllm": str(self._vllm.__version__), "torch": torch.__version__}


def _destroy_distributed_state() -> None:
    with contextlib.suppress(ImportError):
        from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def load(config: ExperimentConfig) -> LoadedVLLM:
    """Start a vLLM engine for the config's model; vLLM missing is an ExperimentError."""
    try:
        import vllm
    except ImportError as exc:
        raise ExperimentError(not_installed_message("vllm", "vllm")) from exc
    return LoadedVLLM(vllm.LLM(**engine_args(config)), vllm)
