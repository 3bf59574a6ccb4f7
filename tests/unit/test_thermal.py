"""Thermal gaps: wait until the GPUs are back near idle, capped; `lem wait-cool`.

The fake NVML stands in for the devices and a fake clock for time: a test never sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed
from typer.testing import CliRunner

from llenergymeasure.commands import health as health_commands
from llenergymeasure.measure.baseline import (
    BaselineFile,
    GpuBaseline,
    idle_baseline,
    load_baseline,
    save_baseline,
)
from llenergymeasure.measure.thermal import (
    CoolingTolerance,
    GpuState,
    idle_states,
    is_cool,
    thermal_gap,
    wait_until_cool,
)

IDLE_TEMPERATURE_C = 35.0
IDLE_POWER_W = 60.0


class FakeClock:
    """Monotonic time that moves only when slept; `on_sleep(n)` runs after the n-th sleep."""

    def __init__(self, on_sleep: Callable[[int], None] = lambda count: None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self._on_sleep(len(self.sleeps))


@pytest.fixture(autouse=True)
def all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def hot_gpus() -> Iterator[list[FakeGpu]]:
    devices = gpus(2, temperature_c=70, power_w=300.0)
    with installed(FakeNvml(devices)):
        yield devices


def idle(index: int) -> GpuState:
    return GpuState(index=index, temperature_c=IDLE_TEMPERATURE_C, power_w=IDLE_POWER_W)


def cool_down(gpu: FakeGpu) -> None:
    gpu.temperature_c, gpu.power_w = int(IDLE_TEMPERATURE_C) + 1, IDLE_POWER_W * 1.05


@pytest.mark.parametrize(
    ("temperature_c", "power_w", "cool"),
    [
        (37.0, 66.0, True),  # at both tolerances: 2 °C and 10 %
        (37.5, 60.0, False),
        (35.0, 66.5, False),
        (30.0, 20.0, True),  # cooler than idle is cool
        (None, 60.0, False),  # an unreadable sensor proves nothing
    ],
)
def test_cool_means_within_tolerance_of_idle_on_temperature_and_power(
    temperature_c: float | None, power_w: float, cool: bool
) -> None:
    now = GpuState(index=0, temperature_c=temperature_c, power_w=power_w)
    assert is_cool(now, idle(0), CoolingTolerance(temperature_c=2.0, power_pct=10.0)) is cool


def test_a_value_missing_from_the_baseline_is_not_judged() -> None:
    temperature_only = GpuState(index=0, temperature_c=IDLE_TEMPERATURE_C, power_w=None)
    hot_but_cold_enough = GpuState(index=0, temperature_c=36.0, power_w=500.0)
    assert is_cool(hot_but_cold_enough, temperature_only, CoolingTolerance())


def test_the_wait_ends_when_the_last_gpu_cools(hot_gpus: list[FakeGpu]) -> None:
    cool_down(hot_gpus[0])
    fake_time = FakeClock(on_sleep=lambda count: cool_down(hot_gpus[1]) if count == 3 else None)

    waited = wait_until_cool(
        [idle(0), idle(1)], 60.0, poll_seconds=2.0, clock=fake_time.clock, sleep=fake_time.sleep
    )

    assert (waited.reason, waited.waited_seconds) == ("cool", 6.0)
    assert fake_time.sleeps == [2.0, 2.0, 2.0]
    assert waited.as_json()["temperatures"] == [36.0, 36.0]


def test_a_gpu_that_never_cools_stops_the_wait_at_the_cap(hot_gpus: list[FakeGpu]) -> None:
    fake_time = FakeClock()

    waited = wait_until_cool(
        [idle(0), idle(1)], 10.0, poll_seconds=3.0, clock=fake_time.clock, sleep=fake_time.sleep
    )

    assert (waited.reason, waited.waited_seconds) == ("cap", 10.0)
    assert fake_time.sleeps == [3.0, 3.0, 3.0, 1.0]
    assert waited.as_json() == {
        "waited_seconds": 10.0,
        "reason": "cap",
        "temperatures": [70.0, 70.0],
        "power_w": [300.0, 300.0],
        "gpus": [
            {"index": 0, "temperature_c": 70.0, "power_w": 300.0},
            {"index": 1, "temperature_c": 70.0, "power_w": 300.0},
        ],
    }


def test_without_nvml_there_is_nothing_to_wait_for(tmp_path: Path) -> None:
    with installed(FakeNvml([], driver_loaded=False)):
        waited = thermal_gap(60.0, load_baseline(tmp_path / "baseline.json"))

    assert (waited.reason, waited.waited_seconds, waited.gpus) == ("no-gpu", 0.0, [])


def test_without_a_baseline_the_gap_is_left_to_the_caller(
    hot_gpus: list[FakeGpu], tmp_path: Path
) -> None:
    waited = thermal_gap(60.0, load_baseline(tmp_path / "missing-baseline.json"))

    assert (waited.reason, waited.waited_seconds) == ("no-baseline", 0.0)
    assert [gpu.temperature_c for gpu in waited.gpus] == [70.0, 70.0]


def test_idle_values_come_only_from_the_same_gpus(hot_gpus: list[FakeGpu]) -> None:
    baseline = BaselineFile(
        measured_at=0.0,
        checked_at=0.0,
        seconds=30.0,
        gpus=[
            GpuBaseline(index=0, uuid=hot_gpus[0].uuid, power_w=55.0, temperature_c=33.0),
            GpuBaseline(index=1, uuid="GPU-another-card", power_w=80.0, temperature_c=30.0),
        ],
    )

    states = idle_states(baseline, [0, 1, 2])

    assert states == [
        GpuState(index=0, temperature_c=33.0, power_w=55.0),
        GpuState(index=1, temperature_c=None, power_w=None),
        GpuState(index=2, temperature_c=None, power_w=None),
    ]


@pytest.mark.usefixtures("instant_settle")
def test_the_idle_baseline_records_the_idle_temperature(tmp_path: Path) -> None:
    cache = tmp_path / "baseline.json"
    with installed(FakeNvml(gpus(2, temperature_c=34, power_w=IDLE_POWER_W))):
        idle_baseline([0, 1], 0.05, cache)

    saved = load_baseline(cache)

    assert saved is not None
    assert [(gpu.temperature_c, gpu.power_w) for gpu in saved.gpus] == [(34.0, 60.0), (34.0, 60.0)]


def test_lem_wait_cool_prints_the_wait_as_json(tmp_path: Path) -> None:
    app = typer.Typer()
    health_commands.register(app)
    baseline = tmp_path / "baseline.json"
    devices = gpus(1, temperature_c=36, power_w=IDLE_POWER_W)
    save_baseline(
        baseline,
        BaselineFile(
            measured_at=0.0,
            checked_at=0.0,
            seconds=30.0,
            gpus=[
                GpuBaseline(index=0, uuid=devices[0].uuid, power_w=IDLE_POWER_W, temperature_c=35)
            ],
        ),
    )

    with installed(FakeNvml(devices)):
        outcome = CliRunner().invoke(
            app, ["wait-cool", "--max-seconds", "30", "--baseline", str(baseline)]
        )

    assert outcome.exit_code == 0, outcome.output
    assert baseline.stat().st_mode & 0o777 == 0o644  # the shared writer's mode, not mkstemp's 0600
    printed = json.loads(outcome.stdout)
    assert (printed["reason"], printed["temperatures"], printed["power_w"]) == (
        "cool",
        [36.0],
        [IDLE_POWER_W],
    )


def test_lem_wait_cool_without_nvml_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    health_commands.register(app)
    monkeypatch.delenv("LEM_BASELINE_CACHE", raising=False)
    monkeypatch.delenv("LEM_STATE_DIR", raising=False)

    with installed(FakeNvml([], driver_loaded=False)):
        outcome = CliRunner().invoke(app, ["wait-cool", "--max-seconds", "600"])

    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.stdout)["reason"] == "no-gpu"
