"""TensorRT-LLM backend: the `tensorrt_llm` LLM API (`LLM`, `SamplingParams`).

`tensorrt_llm` is imported inside `load` only. `llm_args(config)` is a plain dict
(unit-tested); `build_llm_kwargs` turns its nested parts into the API's objects
(`KvCacheConfig`, `QuantConfig`). The engine limits (`max_batch_size`,
`max_num_tokens`, `max_seq_len`, `max_input_len`, `max_beam_width`) are top-level
LLM arguments in current releases, which copy them into the `BuildConfig` when an
engine is built, and the PyTorch flow reads them directly.

Per-request timings come from `CompletionOutput.request_perf_metrics.timing_metrics`
(`arrival_time`, `first_token_time`, `last_token_time`: `timedelta`s on the
executor's clock), requested with `SamplingParams(return_perf_metrics=True)`.
Releases without them fall back to the batch wall-clock time, with a warning.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from datetime import timedelta
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, TensorRTConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import not_installed_message
from llenergymeasure.runner.backends.base import BatchOutcome
from llenergymeasure.runner.backends.engine_outputs import RequestTiming, parse_engine_outputs

TRT_DTYPES: dict[str, str] = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
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
    """Arguments of `tensorrt_llm.LLM(...)`, with `kv_cache_config` and `quant_algo` as
    plain values (see `build_llm_kwargs`). A prebuilt `engine_dir` is the model; the
    model path then only provides the tokenizer."""
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
    kv_cache = {
        engine_name: getattr(section, name)
        for name, engine_name in KV_CACHE_FIELDS.items()
        if getattr(section, name) is not None
    }
    if kv_cache:
        args["kv_cache_config"] = kv_cache
    if section.quantization is not None:
        args["quant_algo"] = section.quantization
    return {name: value for name, value in args.items() if value is not None}


def build_llm_kwargs(args: dict[str, Any], llmapi: Any) -> dict[str, Any]:
    """Replace the plain nested values of `llm_args` by `tensorrt_llm.llmapi` objects."""
    kwargs = dict(args)
    if "kv_cache_config" in kwargs:
        kwargs["kv_cache_config"] = llmapi.KvCacheConfig(**kwargs["kv_cache_config"])
    if "quant_algo" in kwargs:
        algorithm = llmapi.QuantAlgo[kwargs.pop("quant_algo")]
        kwargs["quant_config"] = llmapi.QuantConfig(quant_algo=algorithm)
    return kwargs


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


def supported_sampling_params(params: dict[str, Any], sampling_class: Any) -> dict[str, Any]:
    """Drop the arguments an older `SamplingParams` dataclass does not have."""
    if not dataclasses.is_dataclass(sampling_class):
        return params
    names = {field.name for field in dataclasses.fields(sampling_class)}
    return {name: value for name, value in params.items() if name in names}


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


def parse_outputs(outputs: list[Any], batch_seconds: float) -> BatchOutcome:
    """Records from `tensorrt_llm` `RequestOutput`s, in prompt order."""
    return parse_engine_outputs(
        outputs, batch_seconds, lambda output: request_timing(output.outputs[0]), "TensorRT-LLM"
    )


class LoadedTensorRT:
    """A `tensorrt_llm.LLM` ready to generate."""

    device = "cuda"

    def __init__(self, llm: Any, trtllm_module: Any) -> None:
        self._llm: Any = llm
        self._trtllm = trtllm_module

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        if self._llm is None:
            raise ExperimentError("the TensorRT-LLM engine was unloaded: load it again")
        sampling_class = self._trtllm.SamplingParams
        params = sampling_class(
            **supported_sampling_params(sampling_params(config), sampling_class)
        )
        started = time.perf_counter()
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        return parse_outputs(list(outputs), time.perf_counter() - started)

    def synchronize(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def unload(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        llm.shutdown()  # stops the executor workers that hold the engine and KV cache
        del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def versions(self) -> dict[str, str]:
        import torch

        return {"tensorrt_llm": str(self._trtllm.__version__), "torch": torch.__version__}


def _llm_class(trtllm: Any, prebuilt_engine: bool) -> Any:
    """A prebuilt engine needs the TensorRT-engine LLM; 1.x's default `LLM` is the PyTorch flow."""
    if prebuilt_engine:
        try:
            from tensorrt_llm._tensorrt_engine import LLM as TensorRTEngineLLM
        except ImportError:  # releases before 1.0: the default LLM is the engine flow
            return trtllm.LLM
        return TensorRTEngineLLM
    return trtllm.LLM


def load(config: ExperimentConfig) -> LoadedTensorRT:
    """Build or load a TensorRT-LLM engine for the config; a missing engine is an error."""
    try:
        import tensorrt_llm
        from tensorrt_llm import llmapi
    except ImportError as exc:
        raise ExperimentError(not_installed_message("tensorrt", "tensorrt_llm")) from exc
    llm_class = _llm_class(
        tensorrt_llm,
        prebuilt_engine=config.tensorrt is not None and bool(config.tensorrt.engine_dir),
    )
    llm = llm_class(**build_llm_kwargs(llm_args(config), llmapi))
    return LoadedTensorRT(llm, tensorrt_llm)
