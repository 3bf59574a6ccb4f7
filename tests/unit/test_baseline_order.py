"""When the idle baseline is taken: before the model loads, never with it resident.

The real Worker runs with the fake NVML and a stand-in backend "on cuda" whose load
makes the fake GPU draw load power, as a resident model does on a real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, installed
from fixtures.results import read_result

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.wire import Done, RunRequest
from llenergymeasure.measure.baseline import load_baseline
from llenergymeasure.runner.backends.base import BatchOutcome, RequestRecord
from llenergymeasure.runner.experiment import LoadedModel
from llenergymeasure.runner.loadkey import load_key
from llenergymeasure.runner.worker import Worker

IDLE_W = 60.0
LOADED_W = 180.0
pytestmark = pytest.mark.usefixtures("instant_settle")


class ResidentModel:
    """A model on the fake GPU: loaded, the GPU draws LOADED_W; unloaded, IDLE_W."""

    device = "cuda"

    def __init__(self, gpu: FakeGpu) -> None:
        self._gpu = gpu
        gpu.power_w = LOADED_W

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        return BatchOutcome([RequestRecord(4, 4, 0.01) for _ in prompts])

    def synchronize(self) -> None:
        pass

    def unload(self) -> None:
        self._gpu.power_w = IDLE_W

    def versions(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGpu]:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    device = FakeGpu(power_w=IDLE_W)
    with installed(FakeNvml([device])):
        yield device


def worker_for(gpu: FakeGpu) -> Worker:
    def load(config: ExperimentConfig) -> LoadedModel:
        return LoadedModel(ResidentModel(gpu), load_key(config), load_seconds=0.5)

    return Worker(loader=load)


def config(name: str = "resident") -> dict[str, Any]:
    return {
        "config_name": name,
        "backend": "pytorch",
        "model": {"path": "stand-in/model"},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 2},
        "measurement": {
            "warmup_prompts": 0,
            "min_window_seconds": 0.05,
            "baseline_seconds": 0.1,
        },
    }


def run(worker: Worker, out: Path, cache: Path, name: str = "resident") -> Any:
    request = RunRequest(
        config=config(name),
        config_source="resident.json",
        out_dir=str(out),
        baseline_cache=str(cache),
    )
    reply = worker.run(request, emit=lambda progress: None)
    assert isinstance(reply, Done), reply
    return read_result(Path(reply.result_path))


def test_the_worker_measures_idle_power_before_it_loads_the_model(
    gpu: FakeGpu, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "baseline.json"
    result = run(worker_for(gpu), tmp_path / "one", cache)
    assert result.energy.idle_baseline_power_w_per_gpu == [pytest.approx(IDLE_W)]
    stored = load_baseline(cache)
    assert stored is not None and stored.power_w() == [pytest.approx(IDLE_W)]


def test_each_result_records_the_idle_figure_s_temperature_age_and_method(
    gpu: FakeGpu, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "baseline.json"
    worker = worker_for(gpu)
    first = run(worker, tmp_path / "one", cache)
    second = run(worker, tmp_path / "two", cache)  # reused model: the cached figure, older

    (one,) = first.energy.idle_baseline_conditions
    (two,) = second.energy.idle_baseline_conditions
    assert (one.power_w, one.temperature_c, one.method) == (
        pytest.approx(IDLE_W),
        gpu.temperature_c,
        "power_samples",  # 0.1 s is below the counter's minimum period
    )
    # no earlier idle figure: settled once temperature and power stopped falling
    assert (one.settled, one.settled_by) == (True, "steady")
    assert one.seconds == 0.1 and 0.0 <= one.age_s < two.age_s


def test_a_reused_model_reads_the_cached_idle_value_and_leaves_it(
    gpu: FakeGpu, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "baseline.json"
    worker = worker_for(gpu)
    run(worker, tmp_path / "one", cache)
    stored = cache.read_text()
    second = run(worker, tmp_path / "two", cache)  # same load key: the model stays loaded
    assert second.timing.model_reused
    assert second.energy.idle_baseline_power_w_per_gpu == [pytest.approx(IDLE_W)]
    assert cache.read_text() == stored


def test_a_reused_model_without_a_cached_idle_value_has_no_baseline(
    gpu: FakeGpu, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "baseline.json"
    worker = worker_for(gpu)
    run(worker, tmp_path / "one", cache)
    cache.write_text(json.dumps({"not": "a baseline"}))  # lost between experiments
    second = run(worker, tmp_path / "two", cache)
    assert second.energy.idle_baseline_power_w is None
    assert any(warning.startswith("no idle baseline") for warning in second.warnings)
    assert load_baseline(cache) is None, "nothing measured with the model resident is stored"


def test_processes_that_cannot_be_attributed_are_not_called_foreign(
    gpu: FakeGpu, tmp_path: Path
) -> None:
    gpu.processes = [(2**22 + 7, 1 << 30)]  # a host PID this namespace does not have
    result = run(worker_for(gpu), tmp_path / "one", tmp_path / "baseline.json")
    assert [process["owner"] for process in result.foreign_gpu_processes] == ["unknown"]
    assert any("not attributable" in warning for warning in result.warnings)
    assert not any("other GPU process" in warning for warning in result.warnings)
