"""The measurement window: energy counters at the edges, a sampler thread in between.

`EnergyMeter.start()` reads every GPU's NVML total-energy counter and the RAPL
package counters, then samples power, temperature, clock event (throttle) reasons
and GPU processes every `sample_interval_ms` on a daemon thread. `stop()` joins the
thread, reads the counters again and returns the `WindowReadings`. GPUs without the
energy counter (before Volta) get their energy from the power samples, integrated
over the window (source `nvml_power`).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from llenergymeasure.contracts.result import EnergySource
from llenergymeasure.measure import nvml
from llenergymeasure.measure.rapl import RaplAccumulator, RaplReader

# GPU process lists change rarely and cost more than a power read: look every this many samples.
PROCESS_SCAN_EVERY = 10


@dataclass
class Sample:
    """One tick of the sampler; one value per GPU of the window (None: not readable)."""

    t_s: float
    power_w: list[float | None]
    temperature_c: list[float | None]
    # RAPL energy since the meter's start (J): lets a sub-window (server mode's steady
    # window) take the CPU energy between its own edges; None without RAPL.
    cpu_energy_j: float | None = None
    # Each GPU's NVML total-energy counter (mJ), for the same reason: a sub-window takes
    # the GPUs' energy from the counters too. None per GPU without the counter.
    gpu_energy_mj: list[int | None] = field(default_factory=list)


@dataclass
class WindowReadings:
    source: EnergySource
    duration_s: float
    sample_interval_ms: int
    gpu_indices: list[int]
    gpu_energy_j_per_gpu: list[float] | None
    cpu_energy_j: float | None
    samples: list[Sample] = field(default_factory=list)
    clock_event_reasons: list[str] = field(default_factory=list)
    clock_events_measured: bool = False  # False: the reasons could not be read at all
    foreign_processes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def energy_source(
    gpu_energy: list[float] | None, cpu_energy: float | None, integrated: bool = False
) -> EnergySource:
    if gpu_energy is not None:
        return "nvml_power" if integrated else "nvml"
    if cpu_energy is not None:
        return "rapl"
    return "none"


class EnergyMeter:
    """Measures one window on `gpu_indices` (NVML indices; [] measures CPU energy only)."""

    def __init__(
        self,
        gpu_indices: list[int],
        sample_interval_ms: int = 100,
        rapl: RaplReader | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.gpu_indices = list(gpu_indices)
        self.sample_interval_ms = sample_interval_ms
        self._rapl_reader = rapl if rapl is not None else RaplReader()
        self._proc_root = proc_root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        self._samples: list[Sample] = []
        self._reasons: set[str] = set()
        self._reasons_read = False
        self._processes: dict[tuple[int, int], dict[str, Any]] = {}
        self._warnings: list[str] = []
        self._energy_start: list[int] | None = None
        self._rapl: RaplAccumulator | None = None
        self._t0 = 0.0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("EnergyMeter.start() called twice without stop()")
        self._reset()
        self._stop.clear()
        self._rapl = RaplAccumulator(self._rapl_reader)
        self._energy_start = self._read_energy_mj()
        self._t0 = time.monotonic()
        self._take_sample(scan_processes=True)
        self._thread = threading.Thread(target=self._run, name="lem-energy-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> WindowReadings:
        if self._thread is None:
            raise RuntimeError("EnergyMeter.stop() called before start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        duration = time.monotonic() - self._t0
        energy_end = self._read_energy_mj()
        self._take_sample(scan_processes=True)  # also brings the RAPL total up to now
        gpu_energy = self._gpu_energy_j(self._energy_start, energy_end)
        integrated = gpu_energy is None and bool(self.gpu_indices)
        if integrated:
            gpu_energy = self._integrated_energy_j()
        cpu_energy = self._rapl.energy_j if self._rapl is not None else None
        self._warnings.extend(p for p in nvml.problems() if p not in self._warnings)
        return WindowReadings(
            source=energy_source(gpu_energy, cpu_energy, integrated),
            duration_s=duration,
            sample_interval_ms=self.sample_interval_ms,
            gpu_indices=self.gpu_indices,
            gpu_energy_j_per_gpu=gpu_energy,
            cpu_energy_j=cpu_energy,
            samples=self._samples,
            clock_event_reasons=sorted(self._reasons),
            clock_events_measured=self._reasons_read,
            foreign_processes=list(self._processes.values()),
            warnings=self._warnings,
        )

    def _run(self) -> None:
        interval = self.sample_interval_ms / 1000.0
        tick = 0
        # Sleep to absolute deadlines so the sampling period does not drift by the read time.
        next_deadline = self._t0 + interval
        while not self._stop.wait(max(0.0, next_deadline - time.monotonic())):
            tick += 1
            self._take_sample(scan_processes=tick % PROCESS_SCAN_EVERY == 0)
            next_deadline += interval
            late_s = time.monotonic() - next_deadline
            if late_s > 0:  # fell behind (a slow read, the GIL): skip missed ticks, no burst
                next_deadline += (late_s // interval + 1) * interval

    def _take_sample(self, scan_processes: bool) -> None:
        try:
            if self._rapl is not None:
                self._rapl.update()
            self._samples.append(
                Sample(
                    t_s=time.monotonic() - self._t0,
                    power_w=[nvml.power_w(index) for index in self.gpu_indices],
                    temperature_c=[nvml.temperature_c(index) for index in self.gpu_indices],
                    cpu_energy_j=self._rapl.energy_j if self._rapl is not None else None,
                    gpu_energy_mj=[nvml.total_energy_mj(index) for index in self.gpu_indices],
                )
            )
            for index in self.gpu_indices:
                bits = nvml.clock_event_bits(index)
                if bits is not None:
                    self._reasons_read = True
                    self._reasons.update(nvml.decode_clock_events(bits))
            if scan_processes:
                self._scan_processes()
        except Exception as exc:  # the window must survive a bad read; the result says so
            message = f"sampler: {type(exc).__name__}: {exc}"
            if message not in self._warnings:
                self._warnings.append(message)

    def _scan_processes(self) -> None:
        for index in self.gpu_indices:
            for process in nvml.compute_processes(index) or []:
                owner = process_owner(process.pid, self._proc_root)
                if owner == "self":
                    continue
                entry = self._processes.setdefault(
                    (index, process.pid),
                    {"gpu": index, "pid": process.pid, "owner": owner, "used_memory_mib": None},
                )
                if process.used_memory_mib is not None:
                    previous = entry["used_memory_mib"] or 0.0
                    entry["used_memory_mib"] = max(previous, round(process.used_memory_mib, 1))

    def _read_energy_mj(self) -> list[int] | None:
        if not self.gpu_indices:
            return None
        readings = [nvml.total_energy_mj(index) for index in self.gpu_indices]
        if any(value is None for value in readings):
            return None
        return [int(value) for value in readings if value is not None]

    def _gpu_energy_j(self, start: list[int] | None, end: list[int] | None) -> list[float] | None:
        if start is None or end is None:
            return None
        return [(after - before) / 1000.0 for before, after in zip(start, end, strict=True)]

    def _integrated_energy_j(self) -> list[float] | None:
        """Energy per GPU from its power samples (trapezoids), for GPUs without the counter."""
        per_gpu = [integrate_power(self._samples, slot) for slot in range(len(self.gpu_indices))]
        if any(energy is None for energy in per_gpu):
            self._warnings.append(
                "NVML total-energy counter not readable on these GPUs and too few power "
                "samples to integrate: no GPU energy"
            )
            return None
        self._warnings.append(
            "NVML total-energy counter not readable on these GPUs (before Volta?): GPU energy "
            f"integrated from power samples every {self.sample_interval_ms} ms (less exact)"
        )
        return [energy for energy in per_gpu if energy is not None]


def integrate_power(samples: list[Sample], slot: int) -> float | None:
    """Joules from the power samples of GPU `slot` (trapezoid rule over the readable ones);
    None with fewer than two readings."""
    points = [(s.t_s, watts) for s in samples if (watts := s.power_w[slot]) is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (w0 + w1) / 2.0 for (t0, w0), (t1, w1) in pairwise(points))


def process_owner(pid: int, proc_root: Path = Path("/proc")) -> str:
    """Who a PID of NVML's process list belongs to.

    'self' for this process and its descendants (the engine's workers), 'foreign' for
    another process that uses the GPU, 'unknown' when it cannot be attributed. NVML
    reports PIDs of the host's PID namespace: inside a container without `pid: host`
    (the services' default) a number may mean no process here, or another process
    that happens to have the same number here. So a PID counts as ours or foreign only
    when the process of that number here has an NVIDIA device open, as every process
    NVML lists does; otherwise it is 'unknown' (not attributable), never 'foreign'.
    Where its open files cannot be read (another user's process), the parent chain alone
    decides.
    """
    status = proc_root / str(pid) / "status"
    if not status.exists() or uses_nvidia_device(proc_root, pid) is False:
        return "unknown"
    me = os.getpid()
    seen: set[int] = set()
    current = pid
    while current > 1 and current not in seen:
        if current == me:
            return "self"
        seen.add(current)
        current = _parent_pid(proc_root, current)
    return "foreign"


def uses_nvidia_device(proc_root: Path, pid: int) -> bool | None:
    """Whether process `pid` has a /dev/nvidia* file open; None when that is not readable."""
    try:
        descriptors = list((proc_root / str(pid) / "fd").iterdir())
    except OSError:
        return None
    for descriptor in descriptors:
        try:
            if os.readlink(descriptor).startswith("/dev/nvidia"):
                return True
        except FileNotFoundError:
            continue  # closed since listed (the listing's own descriptor, for one)
        except OSError:
            return None
    return False


def _parent_pid(proc_root: Path, pid: int) -> int:
    try:
        for line in (proc_root / str(pid) / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
