"""vLLM backend: config -> engine/sampling arguments, RequestOutput parsing, load errors.

vLLM is never imported: outputs are stand-ins with the attributes of vLLM 0.11.1's
`RequestOutput` (prompt_token_ids, outputs[0].token_ids, metrics: a `RequestStateStats`),
whose names test_engine_signatures.py checks against the wheel.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig, VLLMConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import vllm as backend


def config(**overrides: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "config_name": "v",
        "backend": "vllm",
        "model": {"path": "/models/llama"},
        "precision": "bfloat16",
    }
    data.update(overrides)
    return ExperimentConfig.model_validate(data)


def request_output(prompt_ids: int, output_ids: int, metrics: Any) -> SimpleNamespace:
    completion = SimpleNamespace(index=0, token_ids=list(range(output_ids)), text="…")
    return SimpleNamespace(
        prompt_token_ids=list(range(prompt_ids)), outputs=[completion], metrics=metrics
    )


def v1_stats(first_token_latency: float, first_ts: float, last_ts: float) -> Any:
    return SimpleNamespace(
        num_generation_tokens=0,
        arrival_time=1_700_000_000.0,
        queued_ts=first_ts - 0.1,
        scheduled_ts=first_ts - 0.05,
        first_token_ts=first_ts,
        last_token_ts=last_ts,
        first_token_latency=first_token_latency,
    )


def test_engine_args_carry_model_precision_seed_and_the_vllm_section() -> None:
    args = backend.engine_args(
        config(
            model={"path": "/models/llama", "revision": "abc123", "trust_remote_code": True},
            decoder={"seed": 7},
            vllm={"tensor_parallel_size": 2, "max_num_seqs": 64, "enforce_eager": True},
        )
    )
    assert args["model"] == "/models/llama" and args["revision"] == "abc123"
    assert args["trust_remote_code"] is True
    assert args["dtype"] == "bfloat16"
    assert args["seed"] == 7
    assert args["disable_log_stats"] is False
    assert (args["tensor_parallel_size"], args["max_num_seqs"]) == (2, 64)
    assert args["enforce_eager"] is True


def test_unset_engine_parameters_keep_vllm_defaults() -> None:
    args = backend.engine_args(config())
    assert "revision" not in args and "max_num_seqs" not in args and "quantization" not in args
    assert args["gpu_memory_utilization"] == 0.9


def test_prefix_caching_is_off_unless_asked_for() -> None:
    # vLLM 0.11 turns it on when the argument is absent (EngineArgs default None).
    assert backend.engine_args(config())["enable_prefix_caching"] is False
    on = backend.engine_args(config(vllm={"enable_prefix_caching": True}))
    assert on["enable_prefix_caching"] is True


def test_every_vllm_section_key_is_passed_under_its_own_name() -> None:
    every_key_set = {
        "max_num_seqs": 8,
        "max_num_batched_tokens": 4096,
        "max_model_len": 2048,
        "enable_prefix_caching": True,
        "enable_chunked_prefill": True,
        "quantization": "fp8",
        "block_size": 16,
        "swap_space": 4.0,
    }
    args = backend.engine_args(config(vllm=every_key_set))
    assert set(VLLMConfig.model_fields) - set(args) == {"version"}  # chooses the service
    assert all(args[key] == value for key, value in every_key_set.items())


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_precision_is_the_vllm_dtype(precision: str) -> None:
    assert backend.engine_args(config(precision=precision))["dtype"] == precision


def test_greedy_sampling_is_temperature_zero() -> None:
    params = backend.sampling_params(config(decoder={"max_new_tokens": 48, "temperature": 0.0}))
    assert params == {"n": 1, "max_tokens": 48, "temperature": 0.0, "seed": 0}


def test_sampled_decoding_passes_top_p_and_top_k() -> None:
    decoder = {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "min_new_tokens": 4, "seed": 3}
    params = backend.sampling_params(config(decoder=decoder))
    assert params["temperature"] == 0.7 and params["top_p"] == 0.9
    assert params["top_k"] == 50
    assert params["min_tokens"] == 4 and params["seed"] == 3


def test_top_k_zero_means_all_tokens_as_vllm_spells_it() -> None:
    params = backend.sampling_params(config(decoder={"temperature": 1.0, "top_k": 0}))
    assert params["top_k"] == -1


def test_stats_give_ttft_latency_and_mean_itl() -> None:
    outputs = [request_output(3, 3, v1_stats(0.2, first_ts=50.0, last_ts=50.5))]
    outcome = backend.parse_outputs(outputs)
    (record,) = outcome.records
    assert (record.input_tokens, record.output_tokens) == (3, 3)
    assert record.ttft_s == pytest.approx(0.2)
    assert record.latency_s == pytest.approx(0.7)
    assert record.itl_s == pytest.approx([0.25, 0.25])
    assert any("per-request means" in warning for warning in outcome.warnings)


def test_only_the_named_stats_fields_are_read() -> None:
    stats = SimpleNamespace(first_token_latency=0.1, first_token_ts=5.0, last_token_ts=5.3)
    assert set(vars(stats)) == set(backend.STATS_FIELDS)
    timing = backend.request_timing(stats)
    assert timing is not None and timing.latency_s == pytest.approx(0.4)


def test_missing_metrics_give_null_timings_never_the_batch_time() -> None:
    # vLLM 0.11.0 builds RequestOutput without metrics; unfilled stats have zeros.
    outputs = [request_output(4, 6, None), request_output(4, 1, v1_stats(0.0, 0.0, 0.0))]
    outcome = backend.parse_outputs(outputs)
    assert [(r.input_tokens, r.output_tokens) for r in outcome.records] == [(4, 6), (4, 1)]
    assert all(r.latency_s is None and r.ttft_s is None for r in outcome.records)
    assert all(r.itl_s == [] for r in outcome.records)
    assert outcome.warnings == [
        "vLLM returned no timing for some requests: their latency, TTFT and inter-token "
        "latency are null (not measured)"
    ]


def test_single_token_output_has_no_inter_token_latency() -> None:
    outputs = [request_output(2, 1, v1_stats(0.5, first_ts=1.0, last_ts=1.0))]
    (record,) = backend.parse_outputs(outputs).records
    assert record.itl_s == [] and record.latency_s == pytest.approx(0.5)


class StandInLLM:
    """Records what the backend hands to `vllm.LLM.generate`, answers with fixed outputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], Any, bool]] = []
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self.shutdown))
        self.shut_down = False

    def generate(self, prompts: list[str], params: Any, use_tqdm: bool) -> list[Any]:
        self.calls.append((prompts, params, use_tqdm))
        return [request_output(2, 3, v1_stats(0.1, 1.0, 1.2)) for _ in prompts]

    def shutdown(self) -> None:
        self.shut_down = True


def test_generate_builds_sampling_params_and_parses_in_prompt_order() -> None:
    llm = StandInLLM()
    module = SimpleNamespace(SamplingParams=lambda **kwargs: kwargs, __version__="0.9.2")
    loaded = backend.LoadedVLLM(llm, module)
    outcome = loaded.generate(["a", "b"], config(decoder={"max_new_tokens": 3}))
    prompts, params, use_tqdm = llm.calls[0]
    assert prompts == ["a", "b"] and use_tqdm is False
    assert params["max_tokens"] == 3
    assert len(outcome.records) == 2
    assert loaded.versions()["vllm"] == "0.9.2"


def test_unload_shuts_the_engine_down_and_refuses_to_generate() -> None:
    llm = StandInLLM()
    loaded = backend.LoadedVLLM(llm, SimpleNamespace(SamplingParams=dict))
    loaded.unload()
    assert llm.shut_down
    with pytest.raises(ExperimentError, match="unloaded"):
        loaded.generate(["a"], config())


def test_load_without_vllm_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ExperimentError, match=r"backend 'vllm' is not installed.*'vllm'"):
        backend.load(config())


class UntimedHalf:
    """A backend whose engine times only every other request (device 'cpu': no NVML)."""

    device = "cpu"

    def generate(self, prompts: list[str], config: ExperimentConfig) -> Any:
        stats = [v1_stats(0.2, 1.0, 1.4) if i % 2 else None for i in range(len(prompts))]
        return backend.parse_outputs([request_output(3, 5, s) for s in stats])

    def synchronize(self) -> None: ...

    def unload(self) -> None: ...

    def versions(self) -> dict[str, str]:
        return {"vllm": "0.11.1"}


def test_an_untimed_request_adds_no_latency_to_the_result() -> None:
    from llenergymeasure.runner.experiment import LoadedModel, RunIdentity, measure_experiment
    from llenergymeasure.runner.loadkey import load_key

    run = config(
        dataset={"name": "builtin:short-prompts", "num_prompts": 4},
        measurement={"warmup_prompts": 0, "baseline_seconds": 0, "min_window_seconds": 0},
    )
    loaded = LoadedModel(backend=UntimedHalf(), load_key=load_key(run), load_seconds=0.0)
    result = measure_experiment(loaded, run, RunIdentity())
    assert result.tokens.requests == 4
    assert result.latency.n == 2 and result.latency.mean == pytest.approx(0.6)
    assert result.ttft.n == 2 and result.itl.n == 8
    assert any("no timing for some requests" in w for w in result.warnings)
