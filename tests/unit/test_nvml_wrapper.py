"""The NVML wrapper: units, fallbacks and absence, against the fake library."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed

from llenergymeasure.measure import nvml


@pytest.fixture
def fake() -> Iterator[FakeNvml]:
    with installed(FakeNvml(gpus(2, power_w=250.5))) as library:
        yield library


def test_no_driver_means_no_nvml_and_every_reading_is_none() -> None:
    with installed(FakeNvml(gpus(1), driver_loaded=False)):
        assert not nvml.available()
        assert "did not initialise" in nvml.unavailable_reason()
        assert nvml.device_count() == 0
        assert nvml.power_w(0) is None
        assert nvml.total_energy_mj(0) is None


def test_init_runs_once(fake: FakeNvml) -> None:
    for _ in range(3):
        assert nvml.available()
    assert fake.calls.count("nvmlInit") == 1


def test_instant_power_field_is_preferred_and_converted_to_watts(fake: FakeNvml) -> None:
    assert nvml.power_w(1) == pytest.approx(250.5)
    assert "field_values" in fake.calls
    assert "power_usage" not in fake.calls


def test_power_usage_is_the_fallback_without_instant_power() -> None:
    with installed(FakeNvml([FakeGpu(power_w=80.0, instant_power_supported=False)])) as fake:
        assert nvml.power_w(0) == pytest.approx(80.0)
        assert "power_usage" in fake.calls


def test_unsupported_energy_counter_reads_as_none() -> None:
    with installed(FakeNvml([FakeGpu(energy_supported=False)])):
        assert nvml.total_energy_mj(0) is None


def test_unknown_device_index_reads_as_none(fake: FakeNvml) -> None:
    assert nvml.power_w(7) is None


def test_clock_events_fall_back_to_the_throttle_reasons_api() -> None:
    gpu = FakeGpu(clock_event_bits=0x4 | 0x40, event_reasons_api=False)
    with installed(FakeNvml([gpu])):
        assert nvml.decode_clock_events(nvml.clock_event_bits(0) or 0) == [
            "sw_power_cap",
            "hw_thermal_slowdown",
        ]


def test_unknown_clock_event_bits_are_kept() -> None:
    assert nvml.decode_clock_events(0x1 | 0x4000) == ["gpu_idle", "unknown_0x4000"]


def test_units_of_the_static_readings(fake: FakeNvml) -> None:
    fake.gpus[0].processes = [(4242, 512 * 1024 * 1024), (4343, None)]
    assert nvml.cuda_driver_version() == "12.4"
    assert nvml.power_limit_w(0) == pytest.approx(700.0)
    assert nvml.memory_mib(0) == (1024.0, 80 * 1024.0)
    assert nvml.clock_mhz(0, "sm") == 1980
    assert nvml.clock_mhz(0, "mem") == 2619
    assert nvml.compute_processes(0) == [
        nvml.ComputeProcess(pid=4242, used_memory_mib=512.0),
        nvml.ComputeProcess(pid=4343, used_memory_mib=None),
    ]


def test_bytes_names_from_old_bindings_are_decoded(fake: FakeNvml) -> None:
    fake.driver = b"470.82.01"  # type: ignore[assignment]
    assert nvml.driver_version() == "470.82.01"
