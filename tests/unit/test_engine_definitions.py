"""The same definitions on every engine: what TTFT counts from (`ttft.definition`), and the
engine import timed apart from the model load (`import_seconds`, `load_seconds`).

TensorRT-LLM stamps a request's arrival when it is submitted only when the LLM itself is
given `return_perf_metrics`. That field is in `BaseLlmArgs` of the TensorRT-LLM source read
through the code index in revisions after 1.0 (`return_perf_metrics: bool = Field(default=
False, description="Return perf metrics.", status="prototype")`; the index does not tag
revisions with releases, one stored version.py says 1.2.0rc2); the 1.0.0rc4 fixture's LLM
args do not have it. The fake `BaseLlmArgs` below is a pydantic model with the fixture's
fields, plus that one for the newer release.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from pydantic import create_model

from llenergymeasure.commands.runner import preload_backend
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.runner import experiment
from llenergymeasure.runner.backends import tensorrt
from llenergymeasure.runner.backends import vllm as vllm_backend
from llenergymeasure.runner.loadkey import load_key

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def config(backend: str, model: str = "/models/m", **extra: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "config_name": "x",
            "backend": backend,
            "model": {"path": model},
            "precision": "float16",
            **extra,
        }
    )


def fake_tensorrt_llm(llm_args_fields: list[str], made: dict[str, Any]) -> dict[str, Any]:
    """sys.modules entries of a tensorrt_llm whose BaseLlmArgs has `llm_args_fields`; its
    LLM records the keywords it was made with in `made`."""
    base_llm_args = create_model("BaseLlmArgs", **{name: (Any, None) for name in llm_args_fields})
    llm_args = ModuleType("tensorrt_llm.llmapi.llm_args")
    llm_args.BaseLlmArgs = base_llm_args  # type: ignore[attr-defined]
    llmapi = ModuleType("tensorrt_llm.llmapi")
    llmapi.llm_args = llm_args  # type: ignore[attr-defined]
    llmapi.KvCacheConfig = dict  # type: ignore[attr-defined]
    package = ModuleType("tensorrt_llm")
    package.llmapi = llmapi  # type: ignore[attr-defined]
    package.LLM = lambda **kwargs: made.update(kwargs)  # type: ignore[attr-defined]
    return {
        "tensorrt_llm": package,
        "tensorrt_llm.llmapi": llmapi,
        "tensorrt_llm.llmapi.llm_args": llm_args,
    }


def rc4_llm_args() -> list[str]:
    report = json.loads((FIXTURES / "tensorrt_llm-1.0.0rc4.json").read_text())
    return report["symbols"]["torch_llm_args"]["names"]


@pytest.mark.parametrize(
    ("extra_fields", "definition"),
    [([], "executor_arrival"), (["return_perf_metrics"], "llm_submit")],
    ids=["1.0", "newer"],
)
def test_tensorrt_llm_gets_the_llm_level_perf_metrics_where_it_takes_them(
    monkeypatch: pytest.MonkeyPatch, extra_fields: list[str], definition: str
) -> None:
    made: dict[str, Any] = {}
    for name, module in fake_tensorrt_llm(rc4_llm_args() + extra_fields, made).items():
        monkeypatch.setitem(sys.modules, name, module)

    loaded = tensorrt.load(config("tensorrt"))

    assert loaded.ttft_definition == definition
    assert made.get("return_perf_metrics") is (True if extra_fields else None)


def test_the_fixture_of_1_0_has_no_llm_level_perf_metrics() -> None:
    assert "return_perf_metrics" not in rc4_llm_args()


class Stamped:
    """A stand-in backend (device 'cpu': no NVML) with a TTFT definition."""

    device = "cpu"
    ttft_definition = "frontend_arrival"

    def generate(self, prompts: list[str], config: ExperimentConfig) -> Any:
        stats = SimpleNamespace(first_token_latency=0.2, first_token_ts=1.0, last_token_ts=1.4)
        outputs = [
            SimpleNamespace(
                prompt_token_ids=[1, 2], outputs=[SimpleNamespace(token_ids=[3, 4])], metrics=stats
            )
            for _ in prompts
        ]
        return vllm_backend.parse_outputs(outputs)

    def synchronize(self) -> None: ...

    def unload(self) -> None: ...

    def versions(self) -> dict[str, str]:
        return {}


class Ticks:
    """perf_counter's stand-in: the time moves only when the test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_vllm_s_import_is_import_seconds_not_load_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ticks = Ticks()

    def import_engine() -> None:
        ticks.now += 90.0  # a cold `import vllm`

    def load(config: ExperimentConfig) -> Stamped:
        ticks.now += 5.0
        return Stamped()

    monkeypatch.setattr(experiment, "time", SimpleNamespace(perf_counter=ticks))
    monkeypatch.setattr(vllm_backend, "import_engine", import_engine)
    monkeypatch.setattr(vllm_backend, "load", load)
    run = config(
        "vllm",
        model=str(tmp_path),
        dataset={"name": "builtin:short-prompts", "num_prompts": 2},
        measurement={"warmup_prompts": 0, "baseline_seconds": 0, "min_window_seconds": 0},
    )

    loaded = experiment.load_model(run)

    assert (loaded.import_seconds, loaded.load_seconds) == (90.0, 5.0)


def test_the_result_says_what_ttft_counts_from_and_times_import_and_load_apart() -> None:
    run = config(
        "vllm",
        dataset={"name": "builtin:short-prompts", "num_prompts": 2},
        measurement={"warmup_prompts": 0, "baseline_seconds": 0, "min_window_seconds": 0},
    )
    loaded = experiment.LoadedModel(
        backend=Stamped(), load_key=load_key(run), load_seconds=5.0, import_seconds=90.0
    )

    first = experiment.measure_experiment(loaded, run, experiment.RunIdentity())
    reused = experiment.measure_experiment(loaded, run, experiment.RunIdentity())

    assert first.ttft.definition == "frontend_arrival" and first.ttft.n == 2
    assert (first.timing.import_seconds, first.timing.load_seconds) == (90.0, 5.0)
    assert first.timing.total_seconds >= 95.0
    assert (reused.timing.import_seconds, reused.timing.load_seconds) == (0.0, 0.0)


def test_the_worker_imports_its_engine_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """So the service's health-check start period (the worker listens only after this)
    covers the engine import it is sized for."""
    imported: list[str] = []
    monkeypatch.setattr(vllm_backend, "import_engine", lambda: imported.append("vllm"))

    preload_backend("vllm", logging.getLogger("test"))

    assert imported == ["vllm"]
