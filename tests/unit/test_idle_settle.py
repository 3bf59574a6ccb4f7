"""An idle that is really idle: the idle figure is measured only once the thermal waiter says
the GPU is back near its earlier idle, a higher figure taken before that never replaces a
lower one, and each result records the idle figure's temperature, age and method.

The waits run on the fake clock (tests/fixtures/clock.py); NVML is the fake bound to the
real pynvml signatures (tests/fakes/fake_nvml.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, installed
from fixtures.clock import FakeClock, WallClock

from llenergymeasure.contracts.result import IdleConditions
from llenergymeasure.measure.baseline import BaselinePolicy, GpuBaseline, idle_entries
from llenergymeasure.measure.thermal import SteadyTolerance

IDLE_W, IDLE_C = 40.0, 35
WARM_W, WARM_C = 90.0, 60
POLICY = BaselinePolicy(
    max_age_s=3600.0,
    recheck_after_s=60.0,
    recheck_seconds=0.05,
    interval_s=0.02,
    settle_max_s=120.0,
    settle_poll_s=5.0,
    settle_steady=SteadyTolerance(window_s=30.0, temperature_c=1.0, power_pct=10.0),
)
SECONDS = 0.1


class CoolingClock(FakeClock):
    """The fake clock; the GPU is back at idle once `cools_after_s` of waiting have passed
    (None: it never cools)."""

    def __init__(self, gpu: FakeGpu, cools_after_s: float | None) -> None:
        super().__init__()
        self.gpu, self.cools_after_s = gpu, cools_after_s

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.cools_after_s is not None and self.now >= self.cools_after_s:
            self.gpu.power_w, self.gpu.temperature_c = IDLE_W + 1.0, IDLE_C


@pytest.fixture
def gpu() -> Iterator[FakeGpu]:
    card = FakeGpu(power_w=IDLE_W, temperature_c=IDLE_C)
    with installed(FakeNvml([card])):
        yield card


def entries(
    cache: Path, wall: WallClock, waits: FakeClock | None = None
) -> list[GpuBaseline] | None:
    waits = waits or FakeClock()
    return idle_entries([0], SECONDS, cache, POLICY, wall, monotonic=waits, sleep=waits.sleep)


def idle_measured_then_model_ran(cache: Path, wall: WallClock, gpu: FakeGpu) -> None:
    """The worker's idle before its first load; then a model warms the card up and is
    unloaded (a hand-over), and a re-check is due."""
    first = entries(cache, wall)
    assert first is not None and first[0].power_w == IDLE_W
    assert (first[0].settled, first[0].settled_by) == (True, "steady")
    gpu.power_w, gpu.temperature_c = WARM_W, WARM_C
    wall.now += POLICY.recheck_after_s * 10


def test_after_an_unload_idle_is_measured_only_once_the_gpu_settled(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    idle_measured_then_model_ran(cache, wall, gpu)
    waits = CoolingClock(gpu, cools_after_s=30.0)

    after = entries(cache, wall, waits)

    assert after is not None and after[0].power_w == IDLE_W  # the re-check found 41 W
    assert waits.now == pytest.approx(30.0), "it waited for the card to cool, no longer"
    assert after[0].checked_at == wall.now


def test_a_warm_recheck_never_replaces_the_lower_idle(tmp_path: Path, gpu: FakeGpu) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    idle_measured_then_model_ran(cache, wall, gpu)
    measured_at = wall.now - POLICY.recheck_after_s * 10
    waits = CoolingClock(gpu, cools_after_s=None)

    after = entries(cache, wall, waits)

    assert waits.now == pytest.approx(POLICY.settle_max_s), "the wait is capped"
    assert after is not None and after[0].power_w == IDLE_W
    assert after[0].measured_at == measured_at and after[0].checked_at == wall.now
    again = entries(cache, wall)  # from the cache: still the idle figure
    assert again is not None and again[0].power_w == IDLE_W


def test_an_expired_idle_is_not_replaced_by_a_higher_one_taken_warm(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    idle_measured_then_model_ran(cache, wall, gpu)
    wall.now += POLICY.max_age_s  # too old to reuse as it is: measured again

    after = entries(cache, wall, CoolingClock(gpu, cools_after_s=None))

    assert after is not None and after[0].power_w == IDLE_W


def test_an_expired_idle_is_replaced_once_the_gpu_settled(tmp_path: Path, gpu: FakeGpu) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    idle_measured_then_model_ran(cache, wall, gpu)
    wall.now += POLICY.max_age_s

    after = entries(cache, wall, CoolingClock(gpu, cools_after_s=10.0))

    assert after is not None and after[0].power_w == pytest.approx(IDLE_W + 1.0)
    assert after[0].settled is True and after[0].measured_at == wall.now


def test_a_lower_figure_is_kept_even_when_the_wait_was_capped(tmp_path: Path, gpu: FakeGpu) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    idle_measured_then_model_ran(cache, wall, gpu)
    gpu.power_w = 30.0  # still hot, but drawing less than the idle figure: lower is better
    wall.now += POLICY.max_age_s

    after = entries(cache, wall, CoolingClock(gpu, cools_after_s=None))

    assert after is not None and after[0].power_w == pytest.approx(30.0)
    assert after[0].settled is False


def test_the_idle_conditions_say_temperature_age_method_and_settling(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    idle_measured_then_model_ran(cache, wall, gpu)
    wall.now += POLICY.max_age_s
    (entry,) = entries(cache, wall, CoolingClock(gpu, cools_after_s=10.0)) or []

    conditions = entry.conditions(wall.now + 42.0)

    assert conditions == IdleConditions(
        power_w=IDLE_W + 1.0,  # power samples of the fake: exactly its power
        temperature_c=IDLE_C,
        age_s=42.0,
        method="power_samples",  # SECONDS is below counter_min_seconds
        seconds=SECONDS,
        settled=True,
        settled_by="earlier_idle",
        settle_waited_s=10.0,
    )


class FallingClock(FakeClock):
    """The fake clock; a warm GPU with no idle figure yet cools by 1 °C and 2 W every 5 s
    of waiting down to IDLE_C and IDLE_W (`floor_after_s` seconds), or forever (None)."""

    def __init__(self, gpu: FakeGpu, floor_after_s: float | None) -> None:
        super().__init__()
        self.gpu, self.floor_after_s = gpu, floor_after_s

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        steps = int(self.now // 5)
        if self.floor_after_s is not None:
            steps = min(steps, int(self.floor_after_s // 5))
        self.gpu.temperature_c = WARM_C - steps
        self.gpu.power_w = WARM_W - 2.0 * steps


def warm_without_an_idle_figure(gpu: FakeGpu) -> None:
    """A hand-over just unloaded a model; no idle figure was ever taken on this GPU."""
    gpu.power_w, gpu.temperature_c = WARM_W, WARM_C


def test_a_first_idle_waits_until_temperature_and_power_stop_falling(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    warm_without_an_idle_figure(gpu)
    waits = FallingClock(gpu, floor_after_s=25.0)  # 5 steps: 55 °C, 80 W, then steady

    (entry,) = entries(tmp_path / "baseline.json", WallClock(), waits) or []

    # Measured at the floor, not at the warm 90 W the card drew when asked.
    assert (entry.power_w, entry.temperature_c) == (WARM_W - 10.0, WARM_C - 5)
    assert (entry.settled, entry.settled_by) == (True, "steady")
    # Steady once a whole window (30 s) passed without a fall: at 25 + 30 s, to a poll.
    assert 55.0 <= waits.now <= 55.0 + POLICY.settle_poll_s
    assert entry.settle_waited_s == pytest.approx(waits.now)


def test_a_first_idle_on_a_card_still_cooling_at_the_cap_says_so(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    warm_without_an_idle_figure(gpu)
    waits = FallingClock(gpu, floor_after_s=None)

    (entry,) = entries(tmp_path / "baseline.json", WallClock(), waits) or []

    assert waits.now == pytest.approx(POLICY.settle_max_s), "the wait is capped"
    assert (entry.settled, entry.settled_by) == (False, "steady")
    conditions = entry.conditions(entry.measured_at or 0.0)
    assert (conditions.settled, conditions.settled_by, conditions.settle_waited_s) == (
        False,
        "steady",
        pytest.approx(POLICY.settle_max_s),
    )


def test_a_later_settled_figure_replaces_a_first_one_taken_still_cooling(
    tmp_path: Path, gpu: FakeGpu
) -> None:
    cache, wall = tmp_path / "baseline.json", WallClock()
    warm_without_an_idle_figure(gpu)
    first = entries(cache, wall, FallingClock(gpu, floor_after_s=None))
    assert first is not None and first[0].settled is False
    assert first[0].power_w == WARM_W - 2.0 * 24  # 42 W at the cap, still falling
    gpu.power_w, gpu.temperature_c = 30.0, IDLE_C  # the card cooled since
    wall.now += POLICY.recheck_after_s * 2  # a re-check is due: it drifted down, re-measured

    after = entries(cache, wall)

    assert after is not None and after[0].power_w == 30.0
    assert (after[0].settled, after[0].settled_by) == (True, "earlier_idle")
