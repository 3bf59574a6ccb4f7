"""build_energy: the arithmetic from window readings to the result's energy sections."""

from __future__ import annotations

import pytest

from llenergymeasure.measure.energy import build_energy, idle_adjusted_j
from llenergymeasure.measure.window import Sample, WindowReadings


def readings(**overrides: object) -> WindowReadings:
    values: dict[str, object] = {
        "source": "nvml",
        "duration_s": 10.0,
        "sample_interval_ms": 100,
        "gpu_indices": [0, 1],
        "gpu_energy_j_per_gpu": [3000.0, 1000.0],
        "cpu_energy_j": 500.0,
        "samples": [
            Sample(0.0, [250.0, 90.0], [50.0, 61.0]),
            Sample(0.1, [310.0, 110.0], [52.0, 64.0]),
            Sample(0.2, [290.0, 100.0], [53.0, 66.0]),
        ],
        "clock_event_reasons": ["gpu_idle"],
        "clock_events_measured": True,
    }
    values.update(overrides)
    return WindowReadings(**values)  # type: ignore[arg-type]


def test_raw_energy_is_summed_over_gpus_and_divided_per_token_and_request() -> None:
    energy, _, _ = build_energy(readings(), None, output_tokens=800, requests=40)
    assert energy.source == "nvml"
    assert energy.gpu_energy_j == 4000.0
    assert energy.gpu_energy_j_per_gpu == [3000.0, 1000.0]
    assert energy.total_energy_j == 4000.0
    assert energy.cpu_energy_j == 500.0
    assert energy.j_per_output_token == pytest.approx(5.0)
    assert energy.j_per_request == pytest.approx(100.0)
    assert energy.idle_adjusted_energy_j is None
    assert energy.adjusted_j_per_output_token is None


def test_idle_adjusted_energy_subtracts_baseline_times_window_per_gpu() -> None:
    energy, _, _ = build_energy(readings(), [60.0, 40.0], output_tokens=800, requests=40)
    # (3000 − 60 × 10) + (1000 − 40 × 10)
    assert energy.idle_adjusted_energy_j == pytest.approx(3000.0)
    assert energy.adjusted_j_per_output_token == pytest.approx(3.75)
    assert energy.idle_baseline_power_w == pytest.approx(100.0)
    assert energy.idle_baseline_power_w_per_gpu == [60.0, 40.0]


def test_baseline_for_other_gpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="baseline has 1 GPUs, the window measured 2"):
        idle_adjusted_j([1.0, 2.0], [5.0], 1.0)


def test_rapl_source_reports_cpu_energy_as_total_and_no_gpu_energy() -> None:
    cpu_only = readings(
        source="rapl",
        gpu_energy_j_per_gpu=None,
        gpu_indices=[],
        samples=[],
        clock_event_reasons=[],
        clock_events_measured=False,
    )
    energy, power, thermal = build_energy(cpu_only, [60.0, 40.0], output_tokens=100, requests=10)
    assert energy.total_energy_j == 500.0
    assert energy.gpu_energy_j is None and energy.gpu_energy_j_per_gpu is None
    assert energy.idle_adjusted_energy_j is None  # GPU idle power says nothing about the CPU
    assert energy.j_per_output_token == pytest.approx(5.0)
    assert power.mean_w is None and power.samples_w == []
    assert thermal.throttled is None


def test_source_none_leaves_every_energy_field_null() -> None:
    nothing = readings(
        source="none", gpu_energy_j_per_gpu=None, cpu_energy_j=None, gpu_indices=[], samples=[]
    )
    energy, _, _ = build_energy(nothing, None, output_tokens=100, requests=10)
    measured = {key: value for key, value in energy.model_dump().items() if key != "source"}
    assert energy.source == "none"
    assert all(value is None for value in measured.values())


def test_no_tokens_gives_no_per_token_figure() -> None:
    energy, _, _ = build_energy(readings(), None, output_tokens=0, requests=0)
    assert energy.j_per_output_token is None and energy.j_per_request is None


def test_power_is_summed_per_sample_and_skips_incomplete_samples() -> None:
    with_gap = [*readings().samples, Sample(0.3, [400.0, None], [55.0, 67.0])]
    _, power, _ = build_energy(readings(samples=with_gap), None, 1, 1)
    assert power.samples_t == [0.0, 0.1, 0.2]
    assert power.samples_w == [340.0, 420.0, 390.0]
    assert power.mean_w == pytest.approx(383.333, abs=1e-3)
    assert power.peak_w == 420.0
    assert power.sample_interval_ms == 100


def test_thermal_follows_the_hottest_gpu() -> None:
    _, _, thermal = build_energy(readings(), None, 1, 1)
    assert thermal.temperature_start_c == 61.0
    assert thermal.temperature_max_c == 66.0
    assert thermal.temperature_mean_c == pytest.approx(63.67, abs=0.01)


@pytest.mark.parametrize(
    ("reasons", "throttled"),
    [
        (["gpu_idle"], False),
        (["applications_clocks_setting", "sync_boost"], False),
        (["sw_power_cap"], True),
        (["gpu_idle", "hw_thermal_slowdown"], True),
    ],
)
def test_throttled_flag_comes_from_performance_limiting_reasons(
    reasons: list[str], throttled: bool
) -> None:
    _, _, thermal = build_energy(readings(clock_event_reasons=reasons), None, 1, 1)
    assert thermal.throttle_reasons == sorted(reasons)
    assert thermal.throttled is throttled


def test_integrated_gpu_power_is_gpu_energy_of_its_own_source() -> None:
    energy, _, _ = build_energy(
        readings(source="nvml_power"), [100.0, 50.0], output_tokens=800, requests=40
    )
    assert energy.source == "nvml_power"
    assert energy.gpu_energy_j == energy.total_energy_j == 4000.0
    assert energy.idle_adjusted_energy_j == pytest.approx(4000.0 - 150.0 * 10.0)
