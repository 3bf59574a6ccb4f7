"""Idle baseline: counter or samples, the per-GPU JSON cache, the re-check, the 10 % drift
rule, and never a warm value stored as idle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed
from fixtures.clock import WallClock as Clock

from llenergymeasure.measure.baseline import (
    BaselinePolicy,
    IdleReading,
    drifted,
    idle_baseline,
    load_baseline,
    measure_idle,
)
from llenergymeasure.measure.thermal import GpuState, idle_states

SECONDS = 0.1
POLICY = BaselinePolicy(
    max_age_s=3600.0,
    recheck_after_s=60.0,
    recheck_seconds=0.05,
    interval_s=0.02,
    settle_max_s=0.05,  # real time here; tests/unit/test_idle_settle.py paces it with a fake clock
    settle_poll_s=0.01,
)


@pytest.fixture
def fake() -> Iterator[FakeNvml]:
    with installed(FakeNvml([FakeGpu(power_w=60.0), FakeGpu(power_w=40.0, uuid="GPU-b")])) as f:
        yield f


@pytest.fixture
def clock() -> Clock:
    return Clock()


def baseline(cache: Path | None, clock: Clock) -> list[float] | None:
    return idle_baseline([0, 1], SECONDS, cache, POLICY, clock)


def power_reads(fake: FakeNvml) -> int:
    return fake.calls.count("field_values")


def test_measures_mean_idle_power_and_writes_the_cache(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "baseline.json"
    assert baseline(cache, clock) == [60.0, 40.0]
    stored = json.loads(cache.read_text())
    assert stored["measured_at"] == stored["checked_at"] == clock.now
    assert [gpu["uuid"] for gpu in stored["gpus"]] == [fake.gpus[0].uuid, "GPU-b"]
    assert stored["measured_at_iso"].startswith("1970-01-12T")


def test_fresh_cache_is_reused_without_sampling(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)
    reads = power_reads(fake)
    fake.gpus[0].power_w = 500.0
    clock.now += 30.0
    assert baseline(cache, clock) == [60.0, 40.0]
    assert power_reads(fake) == reads


def test_recheck_within_tolerance_keeps_the_baseline(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)
    fake.gpus[0].power_w = 64.0  # +6.7 %
    clock.now += 120.0
    assert baseline(cache, clock) == [60.0, 40.0]
    checked = load_baseline(cache)
    assert checked is not None
    assert checked.checked_at == clock.now and checked.measured_at == clock.now - 120.0


def test_drift_above_ten_percent_measures_again(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)
    fake.gpus[1].power_w = 34.0  # -15 % (upwards: tests/unit/test_idle_settle.py)
    clock.now += 120.0
    assert baseline(cache, clock) == [60.0, 34.0]
    remeasured = load_baseline(cache)
    assert remeasured is not None and remeasured.measured_at == clock.now


def test_cache_older_than_max_age_is_measured_again(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)
    fake.gpus[0].power_w = 61.0  # within tolerance, but the cache is too old to trust
    clock.now += POLICY.max_age_s + 1
    assert baseline(cache, clock) == [61.0, 40.0]


def test_cache_of_other_gpus_is_not_used(fake: FakeNvml, clock: Clock, tmp_path: Path) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)
    fake.gpus[1].uuid = "GPU-replaced"
    fake.gpus[1].power_w = 41.0
    assert baseline(cache, clock) == [60.0, 41.0]


def test_unreadable_cache_is_measured_again_and_replaced(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    cache.write_text('{"baseline_version": 1, "gpus": [')
    assert baseline(cache, clock) == [60.0, 40.0]
    assert load_baseline(cache) is not None


def test_without_a_cache_path_nothing_is_written(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    assert baseline(None, clock) == [60.0, 40.0]
    assert list(tmp_path.iterdir()) == []


def test_no_nvml_gives_no_baseline(clock: Clock, tmp_path: Path) -> None:
    with installed(FakeNvml(gpus(1), driver_loaded=False)):
        assert baseline(tmp_path / "baseline.json", clock) is None
    assert not (tmp_path / "baseline.json").exists()


def test_gpu_without_power_readings_gives_no_baseline(clock: Clock, tmp_path: Path) -> None:
    with installed(FakeNvml([FakeGpu(), FakeGpu(power_supported=False)])):
        assert baseline(tmp_path / "baseline.json", clock) is None


@pytest.mark.parametrize(
    ("fresh", "expected"),
    [([60.0, 40.0], False), ([66.0, 40.0], False), ([66.1, 40.0], True), ([60.0, 35.9], True)],
)
def test_drift_rule_is_relative_per_gpu(fresh: list[float], expected: bool) -> None:
    assert drifted([60.0, 40.0], fresh, 0.10) is expected


def test_a_one_gpu_experiment_reads_its_gpu_s_entry_and_keeps_the_others(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)  # `lem baseline` on both GPUs of the service
    reads, before = power_reads(fake), cache.read_text()
    fake.gpus[1].power_w = 300.0  # a model is on GPU 1 now
    clock.now += 30.0
    assert idle_baseline([1], SECONDS, cache, POLICY, clock) == [40.0]
    assert power_reads(fake) == reads
    assert cache.read_text() == before


def test_a_gpu_missing_from_the_cache_is_measured_alone_and_added(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    assert idle_baseline([0], SECONDS, cache, POLICY, clock) == [60.0]
    fake.gpus[0].power_w = 250.0  # busy: must not be sampled again
    clock.now += 10.0
    assert idle_baseline([1], SECONDS, cache, POLICY, clock) == [40.0]
    stored = load_baseline(cache)
    assert stored is not None
    assert {gpu.uuid: gpu.power_w for gpu in stored.gpus} == {
        fake.gpus[0].uuid: 60.0,
        "GPU-b": 40.0,
    }
    assert [gpu.measured_at for gpu in stored.gpus] == [clock.now - 10.0, clock.now]


def test_an_entry_is_found_by_uuid_when_the_gpu_changed_index(clock: Clock, tmp_path: Path) -> None:
    cache = tmp_path / "baseline.json"
    first, second = FakeGpu(power_w=60.0, uuid="GPU-a"), FakeGpu(power_w=40.0, uuid="GPU-b")
    with installed(FakeNvml([first, second])):
        idle_baseline([0, 1], SECONDS, cache, POLICY, clock)
    with installed(FakeNvml([second])) as fake:  # the container now sees GPU-b alone, as 0
        second.power_w = 300.0
        assert idle_baseline([0], SECONDS, cache, POLICY, clock) == [40.0]
        assert power_reads(fake) == 0
        stored = load_baseline(cache)
        assert stored is not None
        assert idle_states(stored, [0]) == [GpuState(index=0, temperature_c=40.0, power_w=40.0)]


def test_idle_power_is_the_energy_counter_s_delta_not_instant_samples(
    clock: Clock, tmp_path: Path
) -> None:
    # Instant power readings catch spikes; the counter integrates the true idle draw.
    gpu = FakeGpu(power_w=500.0, energy_rate_w=55.0)
    policy = BaselinePolicy(counter_min_seconds=0.0, interval_s=0.02, settle_max_s=0.0)
    with installed(FakeNvml([gpu])) as fake:
        power = idle_baseline([0], 0.3, tmp_path / "baseline.json", policy, clock)
        assert power is not None and power[0] == pytest.approx(55.0, rel=0.05)
        assert power_reads(fake) == 1  # the settling check's, before: none in the period
    stored = load_baseline(tmp_path / "baseline.json")
    assert stored is not None and stored.gpus[0].method == "energy_counter"


def test_without_the_counter_idle_power_is_sampled(clock: Clock, tmp_path: Path) -> None:
    policy = BaselinePolicy(counter_min_seconds=0.0, interval_s=0.02)
    with installed(FakeNvml([FakeGpu(power_w=70.0, energy_supported=False)])):
        readings = measure_idle([0], 0.1, policy)
    assert readings == [IdleReading(power_w=70.0, method="power_samples", temperature_c=40.0)]


def test_a_busy_gpu_never_rechecks_nor_overwrites_the_idle_value(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    baseline(cache, clock)
    before, reads = cache.read_text(), power_reads(fake)
    fake.gpus[0].power_w = 200.0  # the worker's model is loaded: far from idle
    clock.now += POLICY.recheck_after_s * 10  # a re-check is due
    busy = idle_baseline([0, 1], SECONDS, cache, POLICY, clock, gpu_idle=False)
    assert busy == [60.0, 40.0]
    assert cache.read_text() == before
    assert power_reads(fake) == reads


def test_a_busy_gpu_without_a_cached_idle_value_has_no_baseline(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    cache = tmp_path / "baseline.json"
    assert idle_baseline([0], SECONDS, cache, POLICY, clock, gpu_idle=False) is None
    assert not cache.exists()
    assert power_reads(fake) == 0


def test_a_baseline_of_the_first_version_is_measured_again(
    fake: FakeNvml, clock: Clock, tmp_path: Path
) -> None:
    # Version 1 files could hold values measured with a model loaded (issue 9, point 7).
    cache = tmp_path / "baseline.json"
    cache.write_text(
        json.dumps(
            {
                "baseline_version": 1,
                "measured_at": clock.now,
                "checked_at": clock.now,
                "seconds": 30,
                "gpus": [{"index": 0, "uuid": fake.gpus[0].uuid, "power_w": 300.0}],
            }
        )
    )
    assert load_baseline(cache) is None
    assert idle_baseline([0], SECONDS, cache, POLICY, clock) == [60.0]
