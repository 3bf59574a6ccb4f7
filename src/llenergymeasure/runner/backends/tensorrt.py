"""TensorRT-LLM backend: the `tensorrt_llm` LLM API (`LLM`, `SamplingParams`).

Pinned: tensorrt-llm 1.0.0 (pyproject.toml, docker/Dockerfile.tensorrt). `tensorrt_llm`
is imported inside `load` only. `llm_args(config)` is a plain dict (unit-tested, and
checked against the engine's `TorchLlmArgs` / `KvCacheConfig` fields read from its
source: tests/fixtures/engines/); `load` refuses, by name, an argument the installed
release's `TorchLlmArgs` / `TrtLlmArgs` lacks; `build_llm_kwargs` turns `kv_cache_config`
into the API's `KvCacheConfig`. The engine limits (`max_batch_size`, `max_num_tokens`,
`max_seq_len`, `max_input_len`, `max_beam_width`) are top-level LLM arguments.
1.x's default `LLM` is the PyTorch flow, which takes no `quant_config` and has no
float32: the config refuses both (config/models.py).

Per-request timings come from `CompletionOutput.request_perf_metrics.timing_metrics`
(`arrival_time`, `first_token_time`, `last_token_time`: `timedelta`s on the
executor's clock), requested with `SamplingParams(return_perf_metrics=True)`. A
request without them has null latency, TTFT and inter-token latency, with a warning.
"""

from __future__ import annotations

from datetime import timedelta
from types import ModuleType
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, TensorRTConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import not_installed_message, refuse_unknown_fields
from llenergymeasure.runner.backends.base import BatchOutcome
from llenergymeasure.runner.backends.engine_outputs import RequestTiming, parse_engine_outputs
from llenergymeasure.runner.backends.offline_engine import OfflineEngine

PINNED_PACKAGE = "tensorrt-llm==1.0.0"
# float32 is refused by the config (no float32 in the PyTorch flow).
TRT_DTYPES: dict[str, str] = {"float16": "float16", "bfloat16": "bfloat16"}
ENGINE_LIMITS = (
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "max_input_len",
    "max_beam_width",
)
KV_CACHE_FIELDS = {
    "kv_cache_free_gpu_memory_fraction": "free_gpu_memory_fraction",
    "enable_block_reuse": "enable_block_reuse",
}


def llm_args(config: ExperimentConfig) -> dict[str, Any]:
    """Arguments of `tensorrt_llm.LLM(...)`, with `kv_cache_config` as a plain dict (see
    `build_llm_kwargs`). A prebuilt `engine_dir` is the model; the model path then only
    provides the tokenizer. Block reuse is always stated: the engine's default is on."""
    section = config.tensorrt or TensorRTConfig()
    args: dict[str, Any] = {
        "model": section.engine_dir or config.model.path,
        "dtype": TRT_DTYPES[config.precision],
        "tensor_parallel_size": section.tensor_parallel_size,
        "pipeline_parallel_size": section.pipeline_parallel_size,
        "trust_remote_code": config.model.trust_remote_code,
    }
    if section.engine_dir:
        args["tokenizer"] = config.model.path
    if config.model.revision is not None:
        args["revision"] = config.model.revision
    args.update({name: getattr(section, name) for name in ENGINE_LIMITS})
    args["kv_cache_config"] = {
        engine_name: getattr(section, name)
        for name, engine_name in KV_CACHE_FIELDS.items()
        if getattr(section, name) is not None
    }
    return {name: value for name, value in args.items() if value is not None}


def build_llm_kwargs(args: dict[str, Any], llmapi: Any) -> dict[str, Any]:
    """Replace the plain `kv_cache_config` of `llm_args` by a `tensorrt_llm.llmapi` object."""
    return {**args, "kv_cache_config": llmapi.KvCacheConfig(**args["kv_cache_config"])}


def sampling_params(config: ExperimentConfig) -> dict[str, Any]:
    """Arguments of `tensorrt_llm.SamplingParams(...)`.

    TensorRT-LLM is greedy when top_k is 1 (or unset with top_p unset); its temperature
    must be > 0, so greedy leaves temperature unset. top_k 0 means all tokens: unset.
    """
    decoder = config.decoder
    params: dict[str, Any] = {
        "n": 1,
        "max_tokens": decoder.max_new_tokens,
        "seed": decoder.seed,
        "return_perf_metrics": True,
    }
    if decoder.greedy:
        params["top_k"] = 1
    else:
        params["temperature"] = decoder.temperature
        params["top_p"] = decoder.top_p
        if decoder.top_k > 0:
            params["top_k"] = decoder.top_k
    if decoder.min_new_tokens is not None:
        params["min_tokens"] = decoder.min_new_tokens
    return params


def check_sampling_params(params: dict[str, Any], sampling_class: Any) -> None:
    """Refuse arguments the installed `SamplingParams` lacks: dropping one would change
    what is measured (no `return_perf_metrics`: no timings) without a word."""
    hint = f": install the pinned version ({PINNED_PACKAGE})"
    refuse_unknown_fields(params, sampling_class, "TensorRT-LLM's SamplingParams", hint)


def check_llm_args(kwargs: dict[str, Any], llm_args_class: Any, version: str) -> None:
    """Refuse an `LLM` argument the installed release's `TorchLlmArgs` / `TrtLlmArgs` lacks
    (TensorRT-LLM renames and drops them between releases), naming it and the version,
    before the engine is built. No class found: `LLM` itself validates its arguments."""
    hint = f" (pinned: {PINNED_PACKAGE}; leave that setting unset for this release)"
    what = f"TensorRT-LLM {version}'s {getattr(llm_args_class, '__name__', 'LLM arguments')}"
    refuse_unknown_fields(kwargs, llm_args_class, what, hint)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def request_timing(completion: Any) -> RequestTiming | None:
    """Timing from a completion's perf metrics; None when absent or not populated."""
    perf = getattr(completion, "request_perf_metrics", None)
    timing = getattr(perf, "timing_metrics", None)
    if timing is None:
        return None
    arrival = _seconds(timing.arrival_time)
    first, last = _seconds(timing.first_token_time), _seconds(timing.last_token_time)
    if first <= 0.0 or last < first:
        return None
    return RequestTiming(latency_s=last - arrival, ttft_s=first - arrival, decode_s=last - first)


def parse_outputs(outputs: list[Any]) -> BatchOutcome:
    """Records from `tensorrt_llm` `RequestOutput`s, in prompt order."""
    return parse_engine_outputs(
        outputs, lambda output: request_timing(output.outputs[0]), "TensorRT-LLM"
    )


class LoadedTensorRT(OfflineEngine):
    """A `tensorrt_llm.LLM` ready to generate."""

    engine_name = "TensorRT-LLM"
    package = "tensorrt_llm"
    # timing_metrics.arrival_time: set at submit with the LLM-level return_perf_metrics
    # (`load` passes it where the LLM takes it), else when the executor receives the request.
    ttft_definition = "executor_arrival"

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        llm = self._loaded()
        params = sampling_params(config)
        check_sampling_params(params, self._module.SamplingParams)
        outputs = llm.generate(prompts, self._module.SamplingParams(**params), use_tqdm=False)
        return parse_outputs(list(outputs))

    def _shut_down(self, llm: Any) -> None:
        llm.shutdown()  # stops the executor workers that hold the engine and KV cache


def _llm_class(trtllm: Any, prebuilt_engine: bool) -> Any:
    """A prebuilt engine needs the TensorRT-engine LLM; 1.x's default `LLM` is the PyTorch flow."""
    if prebuilt_engine:
        try:
            from tensorrt_llm._tensorrt_engine import LLM as TensorRTEngineLLM
        except ImportError:  # releases before 1.0: the default LLM is the engine flow
            return trtllm.LLM
        return TensorRTEngineLLM
    return trtllm.LLM


def import_engine() -> ModuleType:
    """tensorrt_llm and its LLM API (timed apart from the load by backends.import_backend)."""
    try:
        import tensorrt_llm
        import tensorrt_llm.llmapi
    except ImportError as exc:
        raise ExperimentError(not_installed_message("tensorrt", "tensorrt_llm")) from exc
    return tensorrt_llm


def takes_llm_perf_metrics(llm_args_class: Any) -> bool:
    """Whether the LLM takes `return_perf_metrics` itself (BaseLlmArgs of releases after 1.0;
    not 1.0.0rc4's): only then is a request's arrival stamped when it is submitted, not
    when the executor sees it."""
    return "return_perf_metrics" in getattr(llm_args_class, "model_fields", {})


def _llm_args_class(trtllm: Any, name: str = "BaseLlmArgs") -> Any:
    return getattr(getattr(trtllm.llmapi, "llm_args", None), name, None)


def load(config: ExperimentConfig) -> LoadedTensorRT:
    """Build or load a TensorRT-LLM engine for the config; a missing engine is an error."""
    tensorrt_llm = import_engine()
    prebuilt = config.tensorrt is not None and bool(config.tensorrt.engine_dir)
    llm_class = _llm_class(tensorrt_llm, prebuilt_engine=prebuilt)
    args = llm_args(config)
    # the PyTorch flow's LLM validates TorchLlmArgs; a prebuilt engine's LLM, TrtLlmArgs
    args_class = "TrtLlmArgs" if prebuilt else "TorchLlmArgs"
    version = str(getattr(tensorrt_llm, "__version__", "unknown"))
    check_llm_args(args, _llm_args_class(tensorrt_llm, args_class), version)
    kwargs = build_llm_kwargs(args, tensorrt_llm.llmapi)
    at_submit = takes_llm_perf_metrics(_llm_args_class(tensorrt_llm))
    if at_submit:
        kwargs["return_perf_metrics"] = True
    loaded = LoadedTensorRT(llm_class(**kwargs), tensorrt_llm)
    loaded.ttft_definition = "llm_submit" if at_submit else "executor_arrival"
    return loaded
