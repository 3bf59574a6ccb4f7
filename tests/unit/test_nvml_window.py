"""EnergyMeter: counter deltas, the sampler thread, throttle reasons, foreign processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed

from llenergymeasure.measure.energy import build_energy
from llenergymeasure.measure.rapl import RaplReader
from llenergymeasure.measure.window import (
    EnergyMeter,
    Sample,
    WindowReadings,
    integrate_power,
    process_owner,
)

WINDOW_S = 0.6


def no_rapl(tmp_path: Path) -> RaplReader:
    return RaplReader(tmp_path / "no-powercap")


def fake_rapl(tmp_path: Path, energy_uj: int) -> Path:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone


def measure(meter: EnergyMeter, seconds: float = WINDOW_S) -> WindowReadings:
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def test_gpu_energy_is_the_counter_delta_per_gpu(tmp_path: Path) -> None:
    with installed(FakeNvml([FakeGpu(power_w=300.0), FakeGpu(power_w=100.0)])):
        readings = measure(EnergyMeter([0, 1], 50, rapl=no_rapl(tmp_path)))
    assert readings.source == "nvml"
    assert readings.gpu_energy_j_per_gpu is not None
    first, second = readings.gpu_energy_j_per_gpu
    # The fake counters advance at 300 W and 100 W of real time, as a device's would.
    assert first == pytest.approx(300.0 * readings.duration_s, rel=0.05)
    assert second == pytest.approx(100.0 * readings.duration_s, rel=0.05)
    assert readings.cpu_energy_j is None


def test_sampler_records_power_and_temperature_at_the_interval(tmp_path: Path) -> None:
    with installed(FakeNvml(gpus(2, power_w=150.0, temperature_c=55))):
        readings = measure(EnergyMeter([0, 1], 50, rapl=no_rapl(tmp_path)))
    # Deadline-based ticks never outrun the interval; a loaded machine may skip some.
    assert 3 <= len(readings.samples) <= readings.duration_s / 0.05 + 3
    assert all(sample.power_w == [150.0, 150.0] for sample in readings.samples)
    assert all(sample.temperature_c == [55.0, 55.0] for sample in readings.samples)
    times = [sample.t_s for sample in readings.samples]
    assert times == sorted(times) and times[0] < 0.05


def test_throttle_reasons_seen_during_the_window_are_collected(tmp_path: Path) -> None:
    fake = FakeNvml(gpus(1, clock_event_bits=0x1))
    with installed(fake):
        meter = EnergyMeter([0], 20, rapl=no_rapl(tmp_path))
        meter.start()
        time.sleep(0.1)
        fake.gpus[0].clock_event_bits = 0x4 | 0x20
        time.sleep(0.1)
        readings = meter.stop()
    assert readings.clock_event_reasons == ["gpu_idle", "sw_power_cap", "sw_thermal_slowdown"]
    assert readings.clock_events_measured


def fake_process(
    proc: Path, pid: int, ppid: int, devices: list[str] | None = ("/dev/nvidia0",)
) -> None:
    """A /proc/PID with a parent and, unless `devices` is None (unreadable), open files."""
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "status").write_text(f"Name:\tx\nPPid:\t{ppid}\n")
    if devices is not None:
        (proc / str(pid) / "fd").mkdir()
        for number, target in enumerate(["/dev/null", *devices]):
            (proc / str(pid) / "fd" / str(number)).symlink_to(target)


def test_processes_of_others_are_foreign_and_ours_are_not(tmp_path: Path) -> None:
    proc, me = tmp_path / "proc", os.getpid()
    fake_process(proc, me, 1)
    fake_process(proc, 500, me)  # the engine's worker process, a child of ours
    fake_process(proc, 600, 1)  # another process using the GPU
    processes = [(500, 1 << 30), (600, 2 << 30), (2**22 + 7, None)]
    with installed(FakeNvml(gpus(1, processes=processes))):
        readings = measure(EnergyMeter([0], 50, rapl=no_rapl(tmp_path), proc_root=proc), 0.1)
    assert readings.foreign_processes == [
        {"gpu": 0, "pid": 600, "owner": "foreign", "used_memory_mib": 2048.0},
        {"gpu": 0, "pid": 2**22 + 7, "owner": "unknown", "used_memory_mib": None},
    ]


def test_a_host_pid_that_means_another_process_here_is_not_attributed(tmp_path: Path) -> None:
    # In a container without `pid: host`, NVML's (host) PID 600 may name an unrelated
    # process here, or one of ours: without an NVIDIA device open it is neither.
    proc, me = tmp_path / "proc", os.getpid()
    fake_process(proc, me, 1)
    fake_process(proc, 600, 1, devices=[])
    fake_process(proc, 700, me, devices=[])
    assert process_owner(600, proc) == "unknown"
    assert process_owner(700, proc) == "unknown"
    # This test process has no GPU open: NVML listing its PID is a number from elsewhere.
    assert process_owner(os.getpid()) == "unknown"


def test_a_process_whose_files_cannot_be_read_is_judged_by_its_parents(tmp_path: Path) -> None:
    proc, me = tmp_path / "proc", os.getpid()
    fake_process(proc, me, 1)
    fake_process(proc, 800, 1, devices=None)
    assert process_owner(800, proc) == "foreign"


def test_without_energy_counter_gpu_energy_is_integrated_from_power(tmp_path: Path) -> None:
    with installed(FakeNvml(gpus(2, power_w=150.0, energy_supported=False))):
        readings = measure(EnergyMeter([0, 1], 20, rapl=no_rapl(tmp_path)))
    assert readings.source == "nvml_power"
    assert readings.gpu_energy_j_per_gpu is not None
    for energy in readings.gpu_energy_j_per_gpu:
        # the samples span the window from its first to its last read
        span = readings.samples[-1].t_s - readings.samples[0].t_s
        assert energy == pytest.approx(150.0 * span, rel=1e-6)
        assert span == pytest.approx(readings.duration_s, rel=0.2)
    assert any("integrated from power samples" in warning for warning in readings.warnings)
    energy_section, _, _ = build_energy(readings, [50.0, 50.0], output_tokens=10, requests=1)
    assert energy_section.source == "nvml_power"
    assert energy_section.gpu_energy_j == pytest.approx(sum(readings.gpu_energy_j_per_gpu))
    assert energy_section.idle_adjusted_energy_j is not None


def test_integrate_power_uses_trapezoids_over_readable_samples() -> None:
    samples = [
        Sample(0.0, [100.0], [40.0]),
        Sample(1.0, [None], [40.0]),
        Sample(2.0, [300.0], [40.0]),
        Sample(3.0, [300.0], [40.0]),
    ]
    assert integrate_power(samples, 0) == pytest.approx(2 * 200.0 + 300.0)
    assert integrate_power(samples[:2], 0) is None


def test_a_binding_missing_from_pynvml_is_a_warning_of_the_window(tmp_path: Path) -> None:
    fake = FakeNvml(gpus(1), missing=frozenset({"nvmlDeviceGetTotalEnergyConsumption"}))
    with installed(fake):
        readings = measure(EnergyMeter([0], 50, rapl=no_rapl(tmp_path)), 0.1)
    assert any(
        "has no nvmlDeviceGetTotalEnergyConsumption" in warning for warning in readings.warnings
    )


def test_without_energy_counter_or_power_rapl_is_the_source(tmp_path: Path) -> None:
    zone = fake_rapl(tmp_path, 1_000_000)
    with installed(FakeNvml(gpus(1, energy_supported=False, power_supported=False))):
        meter = EnergyMeter([0], 50, rapl=RaplReader(tmp_path / "powercap"))
        meter.start()
        (zone / "energy_uj").write_text("4000000\n")
        readings = meter.stop()
    assert readings.source == "rapl"
    assert readings.gpu_energy_j_per_gpu is None
    assert readings.cpu_energy_j == pytest.approx(3.0)
    assert any("total-energy counter" in warning for warning in readings.warnings)
    assert readings.samples, "temperatures are still sampled without the energy counter"


def test_without_nvml_or_rapl_the_source_is_none(tmp_path: Path) -> None:
    with installed(FakeNvml([], driver_loaded=False)):
        readings = measure(EnergyMeter([], 50, rapl=no_rapl(tmp_path)), 0.1)
    assert readings.source == "none"
    assert readings.gpu_energy_j_per_gpu is None and readings.cpu_energy_j is None
    assert readings.duration_s >= 0.1
    assert not readings.clock_events_measured


def test_a_meter_is_reusable_and_refuses_misuse(tmp_path: Path) -> None:
    with installed(FakeNvml(gpus(1))):
        meter = EnergyMeter([0], 50, rapl=no_rapl(tmp_path))
        with pytest.raises(RuntimeError, match="before start"):
            meter.stop()
        first = measure(meter, 0.1)
        meter.start()
        with pytest.raises(RuntimeError, match="twice"):
            meter.start()
        second = meter.stop()
    assert first.samples is not second.samples
    assert second.duration_s < first.duration_s


def test_process_owner_follows_the_parent_chain(tmp_path: Path) -> None:
    me = os.getpid()
    for pid, ppid in ((100, me), (101, 100), (200, 1)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "status").write_text(f"Name:\tx\nPPid:\t{ppid}\n")
    (tmp_path / str(me)).mkdir()
    (tmp_path / str(me) / "status").write_text("Name:\tpytest\nPPid:\t1\n")
    assert process_owner(101, tmp_path) == "self"  # a grandchild, e.g. an engine worker
    assert process_owner(200, tmp_path) == "foreign"
    assert process_owner(300, tmp_path) == "unknown"


def test_meter_and_build_energy_agree_on_idle_adjusted_energy(tmp_path: Path) -> None:
    with installed(FakeNvml(gpus(2, power_w=200.0))):
        readings = measure(EnergyMeter([0, 1], 50, rapl=no_rapl(tmp_path)))
    energy, power, _ = build_energy(readings, [50.0, 50.0], output_tokens=1000, requests=10)
    # Two GPUs at 200 W over the window, 50 W of each being idle.
    assert energy.gpu_energy_j == pytest.approx(400.0 * readings.duration_s, rel=0.05)
    assert energy.idle_adjusted_energy_j == pytest.approx(300.0 * readings.duration_s, rel=0.05)
    assert energy.j_per_output_token == pytest.approx(energy.gpu_energy_j / 1000)
    assert power.mean_w == pytest.approx(400.0) and power.peak_w == pytest.approx(400.0)


def test_every_sample_carries_the_rapl_total_so_far(tmp_path: Path) -> None:
    """What server mode's steady window reads its CPU energy from (serve_run.window_energy)."""
    zone = fake_rapl(tmp_path, 1_000_000)
    with installed(FakeNvml([], driver_loaded=False)):
        meter = EnergyMeter([], 20, rapl=RaplReader(tmp_path / "powercap"))
        meter.start()
        time.sleep(0.1)
        # 2 J more, by a rename: the sampler never reads a half-written file
        (zone / "energy_uj.new").write_text("3000000\n")
        (zone / "energy_uj.new").replace(zone / "energy_uj")
        time.sleep(0.1)
        readings = meter.stop()
    totals = [sample.cpu_energy_j for sample in readings.samples]
    assert totals[0] == 0.0 and totals[-1] == pytest.approx(2.0)
    assert all(t is not None for t in totals) and totals == sorted(totals)
    assert readings.cpu_energy_j == pytest.approx(2.0)


def test_every_sample_carries_each_gpus_energy_counter(tmp_path: Path) -> None:
    """What server mode's steady window reads its GPU energy from (serve_run.window_energy):
    the counter per GPU at every tick, rising with the device's power; None without one."""
    old = FakeGpu(power_w=50.0, energy_supported=False)  # before Volta
    with installed(FakeNvml([FakeGpu(power_w=300.0), old])):
        readings = measure(EnergyMeter([0, 1], 50, rapl=no_rapl(tmp_path)))
    counters = [sample.gpu_energy_mj for sample in readings.samples]
    assert len(counters) >= 3 and all(len(c) == 2 and c[1] is None for c in counters)
    first = [c[0] for c in counters]
    assert all(isinstance(mj, int) for mj in first) and first == sorted(first)
    span_s = readings.samples[-1].t_s - readings.samples[0].t_s
    rise_j = (first[-1] - first[0]) / 1000.0  # type: ignore[operator]
    assert rise_j == pytest.approx(300.0 * span_s, rel=0.1)
