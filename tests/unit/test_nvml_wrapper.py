"""The NVML wrapper: units, fallbacks and absence, against the fake library."""

from __future__ import annotations

import threading
import time
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


def test_a_failed_init_is_retried_after_the_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(nvml, "_clock", lambda: now[0])
    with installed(FakeNvml(gpus(1), driver_loaded=False)) as fake:
        assert not nvml.available()
        fake.driver_loaded = True  # the driver finished loading after the worker started
        now[0] += nvml.INIT_RETRY_S / 2
        assert not nvml.available(), "retried before the back-off"
        now[0] += nvml.INIT_RETRY_S
        assert nvml.available()
        assert nvml.total_energy_mj(0) is not None
        assert fake.calls.count("nvmlInit") == 2


def test_refresh_retries_a_failed_init_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "_clock", lambda: 1000.0)
    with installed(FakeNvml(gpus(1), driver_loaded=False)) as fake:
        assert not nvml.available()
        fake.driver_loaded = True
        nvml.refresh()  # what each new experiment does
        assert nvml.available() and nvml.unavailable_reason() == ""


def test_refresh_does_not_initialise_again_once_up(fake: FakeNvml) -> None:
    assert nvml.available()
    nvml.refresh()
    assert nvml.available()
    assert fake.calls.count("nvmlInit") == 1


class MismatchAtInit(FakeNvml):
    def nvmlInit(self) -> None:
        raise self.NVMLLibraryMismatchError("pyNVML version does not match the NVML lib")


def test_a_library_mismatch_at_init_means_no_nvml() -> None:
    with installed(MismatchAtInit(gpus(1))):
        assert not nvml.available()
        assert "NVMLLibraryMismatchError" in nvml.unavailable_reason()


def test_a_driver_without_the_v3_process_list_answers_through_v2() -> None:
    gpu = FakeGpu(processes=[(4242, 1 << 20)], processes_v3=False)
    with installed(FakeNvml([gpu])):
        # pynvml raises NVMLLibraryMismatchError (not an NVMLError) for the unversioned call
        assert nvml.compute_processes(0) == [nvml.ComputeProcess(pid=4242, used_memory_mib=1.0)]
        assert nvml.problems() == []


def test_a_binding_missing_from_pynvml_is_a_recorded_problem_not_silence() -> None:
    missing = frozenset({"nvmlDeviceGetTotalEnergyConsumption"})
    with installed(FakeNvml(gpus(1), missing=missing)):
        assert nvml.total_energy_mj(0) is None
        assert len(nvml.problems()) == 1
        assert "has no nvmlDeviceGetTotalEnergyConsumption" in nvml.problems()[0]


def test_a_device_without_support_is_none_and_no_problem() -> None:
    with installed(FakeNvml([FakeGpu(energy_supported=False)])):
        assert nvml.total_energy_mj(0) is None
        assert nvml.problems() == []


def test_the_older_api_is_no_problem_when_the_newer_one_is_missing() -> None:
    missing = frozenset({"nvmlDeviceGetCurrentClocksEventReasons"})
    with installed(FakeNvml([FakeGpu(clock_event_bits=0x4)], missing=missing)):
        assert nvml.clock_event_bits(0) == 0x4
        assert nvml.problems() == []


def test_a_missing_constant_is_a_recorded_problem() -> None:
    class NoInstantPower(FakeNvml):
        NVML_FI_DEV_POWER_INSTANT = None  # type: ignore[assignment]

    with installed(NoInstantPower([FakeGpu(power_w=80.0)])):
        assert nvml.power_w(0) == pytest.approx(80.0)  # the averaged reading still answers
        assert any("NVML_FI_DEV_POWER_INSTANT" in problem for problem in nvml.problems())


def test_gpus_are_found_by_uuid_and_mig_instances_by_their_gpu() -> None:
    devices = gpus(3)
    devices[2].mig_uuids = ["MIG-11111111-2222-3333-4444-555555555555"]
    with installed(FakeNvml(devices)) as fake:
        assert nvml.index_of_uuid(devices[1].uuid) == 1
        assert nvml.index_of_uuid("MIG-11111111-2222-3333-4444-555555555555") == 2
        assert nvml.index_of_uuid("GPU-not-here") is None
        assert fake.calls.count("handle_by_uuid") == 3


class SlowHandles(FakeNvml):
    """Records how many threads are inside nvmlDeviceGetHandleByIndex at once."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        super().__init__(gpus)
        self.inside = 0
        self.most_inside = 0
        self.handle_calls = 0
        self.entered = threading.Event()

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self.handle_calls += 1
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.entered.set()
        time.sleep(0.05)  # widen the window a second thread could enter in
        self.inside -= 1
        return super().nvmlDeviceGetHandleByIndex(index)


def test_the_handle_cache_is_shared_safely_between_threads() -> None:
    with installed(SlowHandles(gpus(1))) as fake:
        assert nvml.available()
        start = threading.Barrier(4)

        def read() -> None:
            start.wait()
            nvml.power_w(0)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert fake.most_inside == 1
    assert fake.handle_calls == 1, "every thread must see the one cached handle"
