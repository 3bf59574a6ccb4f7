"""TensorRT-LLM backend: config -> LLM/SamplingParams arguments, output parsing, load errors.

tensorrt_llm is never imported: the LLM API objects are stand-ins with the names of
TensorRT-LLM 1.0 (KvCacheConfig, SamplingParams, RequestOutput); test_engine_signatures.py
checks the argument names against the engine's source.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import tensorrt as backend


def config(**overrides: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "config_name": "t",
        "backend": "tensorrt",
        "model": {"path": "/models/llama"},
        "precision": "float16",
    }
    data.update(overrides)
    return ExperimentConfig.model_validate(data)


def stand_in_llmapi() -> SimpleNamespace:
    return SimpleNamespace(KvCacheConfig=lambda **kwargs: ("KvCacheConfig", kwargs))


def request_output(prompt_ids: int, output_ids: int, timing: Any) -> SimpleNamespace:
    perf = None if timing is None else SimpleNamespace(timing_metrics=timing)
    completion = SimpleNamespace(
        index=0, token_ids=list(range(output_ids)), text="…", request_perf_metrics=perf
    )
    return SimpleNamespace(prompt_token_ids=list(range(prompt_ids)), outputs=[completion])


def timing_metrics(arrival: float, first: float, last: float) -> SimpleNamespace:
    return SimpleNamespace(
        arrival_time=timedelta(seconds=arrival),
        first_scheduled_time=timedelta(seconds=arrival + 0.01),
        first_token_time=timedelta(seconds=first),
        last_token_time=timedelta(seconds=last),
    )


def test_llm_args_carry_model_precision_parallelism_and_engine_limits() -> None:
    section = {"tensor_parallel_size": 2, "max_batch_size": 64, "max_seq_len": 4096}
    args = backend.llm_args(config(tensorrt=section))
    assert args == {
        "model": "/models/llama",
        "dtype": "float16",
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 1,
        "trust_remote_code": False,
        "max_batch_size": 64,
        "max_seq_len": 4096,
        "max_beam_width": 1,
        "kv_cache_config": {"enable_block_reuse": False},
    }


def test_prebuilt_engine_is_the_model_and_the_path_gives_the_tokenizer() -> None:
    args = backend.llm_args(config(tensorrt={"engine_dir": "/engines/llama-fp16"}))
    assert args["model"] == "/engines/llama-fp16"
    assert args["tokenizer"] == "/models/llama"


def test_kv_cache_settings_become_an_llmapi_object() -> None:
    section = {"kv_cache_free_gpu_memory_fraction": 0.8, "enable_block_reuse": True}
    args = backend.llm_args(config(tensorrt=section))
    assert args["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "enable_block_reuse": True}
    kwargs = backend.build_llm_kwargs(args, stand_in_llmapi())
    assert kwargs["kv_cache_config"] == (
        "KvCacheConfig",
        {"free_gpu_memory_fraction": 0.8, "enable_block_reuse": True},
    )
    assert "quant_config" not in kwargs and "quant_algo" not in kwargs


def test_block_reuse_is_off_unless_asked_for() -> None:
    # TensorRT-LLM's KvCacheConfig.enable_block_reuse defaults to True.
    kwargs = backend.build_llm_kwargs(backend.llm_args(config()), stand_in_llmapi())
    assert kwargs["kv_cache_config"] == ("KvCacheConfig", {"enable_block_reuse": False})


def test_greedy_is_top_k_one_without_temperature() -> None:
    params = backend.sampling_params(config(decoder={"max_new_tokens": 20}))
    assert params == {"n": 1, "max_tokens": 20, "seed": 0, "return_perf_metrics": True, "top_k": 1}


def test_sampled_decoding_passes_temperature_top_p_and_top_k() -> None:
    decoder = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_new_tokens": 2}
    params = backend.sampling_params(config(decoder=decoder))
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.8, 0.95, 40)
    assert params["min_tokens"] == 2


def test_top_k_zero_leaves_top_k_unset_meaning_all_tokens() -> None:
    params = backend.sampling_params(config(decoder={"temperature": 1.0, "top_k": 0}))
    assert "top_k" not in params


@dataclasses.dataclass
class OldSamplingParams:
    """A SamplingParams without `return_perf_metrics` (and a non-init field)."""

    max_tokens: int = 32
    top_k: int | None = None
    _stop_word_ids: list[int] | None = dataclasses.field(default=None, init=False)


def test_arguments_the_installed_sampling_params_lacks_are_an_error() -> None:
    with pytest.raises(
        ExperimentError, match=r"SamplingParams has no return_perf_metrics.*1\.0\.0"
    ):
        backend.check_sampling_params(
            {"max_tokens": 8, "top_k": 1, "return_perf_metrics": True}, OldSamplingParams
        )
    with pytest.raises(ExperimentError, match="_stop_word_ids"):
        backend.check_sampling_params({"_stop_word_ids": [1]}, OldSamplingParams)
    backend.check_sampling_params({"max_tokens": 8, "top_k": 1}, OldSamplingParams)


def test_generate_refuses_a_sampling_params_without_perf_metrics() -> None:
    llm = SimpleNamespace(generate=lambda *args, **kwargs: pytest.fail("must not generate"))
    module = SimpleNamespace(SamplingParams=OldSamplingParams, __version__="0.9.0")
    loaded = backend.LoadedTensorRT(llm, module)
    with pytest.raises(ExperimentError, match="return_perf_metrics"):
        loaded.generate(["x"], config())


def test_perf_metrics_give_ttft_latency_and_mean_itl() -> None:
    outputs = [request_output(9, 5, timing_metrics(10.0, 10.3, 10.7))]
    outcome = backend.parse_outputs(outputs)
    (record,) = outcome.records
    assert (record.input_tokens, record.output_tokens) == (9, 5)
    assert record.ttft_s == pytest.approx(0.3)
    assert record.latency_s == pytest.approx(0.7)
    assert record.itl_s == pytest.approx([0.1] * 4)


def test_missing_perf_metrics_give_null_timings_never_the_batch_time() -> None:
    outputs = [request_output(3, 4, None), request_output(3, 2, timing_metrics(1.0, 1.2, 1.3))]
    outcome = backend.parse_outputs(outputs)
    untimed, timed = outcome.records
    assert untimed.latency_s is None and untimed.ttft_s is None and untimed.itl_s == []
    assert timed.latency_s == pytest.approx(0.3)
    assert outcome.warnings[0] == (
        "TensorRT-LLM returned no timing for some requests: their latency, TTFT and "
        "inter-token latency are null (not measured)"
    )


def test_generate_passes_sampling_params_and_parses() -> None:
    received: dict[str, Any] = {}

    @dataclasses.dataclass
    class SamplingParams:
        n: int = 1
        max_tokens: int = 32
        seed: int | None = None
        top_k: int | None = None
        return_perf_metrics: bool = False

    def generate(prompts: list[str], params: Any, use_tqdm: bool) -> list[Any]:
        received.update(prompts=prompts, params=params, use_tqdm=use_tqdm)
        return [request_output(2, 2, timing_metrics(0.0, 0.1, 0.2)) for _ in prompts]

    module = SimpleNamespace(SamplingParams=SamplingParams, __version__="1.0.0")
    loaded = backend.LoadedTensorRT(SimpleNamespace(generate=generate), module)
    outcome = loaded.generate(["x", "y", "z"], config(decoder={"max_new_tokens": 2}))
    assert received["params"] == SamplingParams(
        max_tokens=2, seed=0, top_k=1, return_perf_metrics=True
    )
    assert received["use_tqdm"] is False
    assert len(outcome.records) == 3
    assert loaded.versions()["tensorrt_llm"] == "1.0.0"


def test_unload_shuts_the_llm_down() -> None:
    shut_down: list[bool] = []
    llm = SimpleNamespace(shutdown=lambda: shut_down.append(True))
    loaded = backend.LoadedTensorRT(llm, SimpleNamespace())
    loaded.unload()
    loaded.unload()  # a second unload is harmless
    assert shut_down == [True]
    with pytest.raises(ExperimentError, match="unloaded"):
        loaded.generate(["a"], config())


def test_load_without_tensorrt_llm_names_the_missing_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(ExperimentError, match=r"backend 'tensorrt' is not installed.*tensorrt_llm"):
        backend.load(config())


def test_an_engine_s_pydantic_model_takes_a_field_by_name_or_alias() -> None:
    """TorchLlmArgs is a pydantic model: its fields (and their aliases) are what LLM takes."""
    from pydantic import Field, create_model

    from llenergymeasure.runner.backends import init_field_names

    model = create_model("TorchLlmArgs", max_seq_len=(int, Field(0, alias="max_sequence_length")))
    assert init_field_names(model) == {"max_seq_len", "max_sequence_length"}
    assert init_field_names(SimpleNamespace) is None  # neither: the engine's call rejects
