"""Thermal gaps: wait until every GPU is back near its idle temperature and power, capped.

The idle values come from the idle baseline file (`lem baseline`, `measure/baseline.py`).
A GPU is cool when its temperature is at most idle + `temperature_c` and its power at
most idle × (1 + `power_pct` / 100); a value missing from the baseline is not judged.
Without NVML there is nothing to wait for (reason `no-gpu`); without idle values
nothing to compare with (reason `no-baseline`): a fixed gap is then the caller's job.

With no idle figure at all (the first idle measurement of a GPU, perhaps just after a
model ran on it), `wait_until_steady` waits instead until temperature and power have
stopped falling (reason `steady`), capped: a warm card cools for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from llenergymeasure.measure import nvml
from llenergymeasure.measure.gpus import visible_gpu_indices

GapReason = Literal["cool", "steady", "cap", "no-gpu", "no-baseline"]


@dataclass(frozen=True)
class CoolingTolerance:
    temperature_c: float = 2.0
    power_pct: float = 10.0


@dataclass(frozen=True)
class SteadyTolerance:
    """Stopped falling: over the last `window_s`, the temperature fell by less than
    `temperature_c` (NVML reads whole degrees: no degree lost) and power by at most
    `power_pct` percent."""

    window_s: float = 30.0
    temperature_c: float = 1.0
    power_pct: float = 10.0


@dataclass(frozen=True)
class GpuState:
    """One GPU's temperature (°C) and power (W); None where unknown or unreadable."""

    index: int
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class GapWait:
    waited_seconds: float
    reason: GapReason
    gpus: list[GpuState]

    def as_json(self) -> dict[str, Any]:
        return {
            "waited_seconds": round(self.waited_seconds, 3),
            "reason": self.reason,
            "temperatures": [gpu.temperature_c for gpu in self.gpus],
            "power_w": [gpu.power_w for gpu in self.gpus],
            "gpus": [asdict(gpu) for gpu in self.gpus],
        }


class IdleEntry(Protocol):
    temperature_c: float | None
    power_w: float


class IdleFigures(Protocol):
    """What the waiter needs of the baseline file (measure/baseline.py's BaselineFile,
    which settles GPUs with this module's waiter: so no import of it here)."""

    def entry(self, uuid: str | None, index: int) -> IdleEntry | None: ...


def idle_states(baseline: IdleFigures | None, gpu_indices: list[int]) -> list[GpuState]:
    """Idle values per GPU from the baseline, matched by UUID (whatever index the GPU had
    when measured); a GPU it does not cover gets none."""
    states = []
    for index in gpu_indices:
        entry = baseline.entry(nvml.uuid(index), index) if baseline is not None else None
        states.append(
            GpuState(
                index=index,
                temperature_c=None if entry is None else entry.temperature_c,
                power_w=None if entry is None else entry.power_w,
            )
        )
    return states


def read_states(gpu_indices: list[int]) -> list[GpuState]:
    return [
        GpuState(index=index, temperature_c=nvml.temperature_c(index), power_w=nvml.power_w(index))
        for index in gpu_indices
    ]


def is_cool(now: GpuState, idle: GpuState, tolerance: CoolingTolerance) -> bool:
    """Within tolerance of idle on every value the baseline has (unreadable now: not cool)."""
    temperature_ok = idle.temperature_c is None or (
        now.temperature_c is not None
        and now.temperature_c <= idle.temperature_c + tolerance.temperature_c
    )
    power_ok = idle.power_w is None or (
        now.power_w is not None and now.power_w <= idle.power_w * (1 + tolerance.power_pct / 100)
    )
    return temperature_ok and power_ok


def wait_until_cool(
    idle: list[GpuState],
    max_seconds: float,
    tolerance: CoolingTolerance = CoolingTolerance(),
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GapWait:
    """Poll until every GPU of `idle` is cool, or `max_seconds` have passed."""
    if not idle:
        return GapWait(0.0, "no-gpu", [])
    indices = [gpu.index for gpu in idle]
    if all(gpu.temperature_c is None and gpu.power_w is None for gpu in idle):
        return GapWait(0.0, "no-baseline", read_states(indices))

    def cool(_: float, now: list[GpuState]) -> bool:
        return all(is_cool(state, ref, tolerance) for state, ref in zip(now, idle, strict=True))

    return _poll_until(indices, cool, "cool", max_seconds, poll_seconds, clock, sleep)


def is_steady(then: GpuState, now: GpuState, tolerance: SteadyTolerance) -> bool:
    """No longer falling from `then` to `now` (an unreadable value is not judged)."""
    temperature_ok = (
        then.temperature_c is None
        or now.temperature_c is None
        or then.temperature_c - now.temperature_c < tolerance.temperature_c
    )
    power_ok = (
        then.power_w is None
        or now.power_w is None
        or then.power_w - now.power_w <= then.power_w * tolerance.power_pct / 100
    )
    return temperature_ok and power_ok


def wait_until_steady(
    gpu_indices: list[int],
    max_seconds: float,
    tolerance: SteadyTolerance = SteadyTolerance(),
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GapWait:
    """Poll until no GPU's temperature or power has fallen over the last
    `tolerance.window_s` (reason `steady`), or `max_seconds` have passed (`cap`)."""
    if not gpu_indices:
        return GapWait(0.0, "no-gpu", [])
    history: list[tuple[float, list[GpuState]]] = []

    def stopped_falling(waited: float, now: list[GpuState]) -> bool:
        history.append((waited, now))
        # the latest reading at least a window before this one
        then = next((s for t, s in reversed(history) if waited - t >= tolerance.window_s), None)
        return then is not None and all(
            is_steady(a, b, tolerance) for a, b in zip(then, now, strict=True)
        )

    return _poll_until(
        gpu_indices, stopped_falling, "steady", max_seconds, poll_seconds, clock, sleep
    )


def _poll_until(
    indices: list[int],
    settled: Callable[[float, list[GpuState]], bool],
    reason: GapReason,
    max_seconds: float,
    poll_seconds: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> GapWait:
    """Read the GPUs every `poll_seconds` until `settled(waited, states)` (then `reason`)
    or `max_seconds` have passed (`cap`)."""
    started = clock()
    while True:
        now = read_states(indices)
        waited = clock() - started
        if settled(waited, now):
            return GapWait(waited, reason, now)
        if waited >= max_seconds:
            return GapWait(waited, "cap", now)
        sleep(min(poll_seconds, max_seconds - waited))


def thermal_gap(
    max_seconds: float,
    baseline: IdleFigures | None,
    tolerance: CoolingTolerance = CoolingTolerance(),
    poll_seconds: float = 1.0,
) -> GapWait:
    """Wait for this process's GPUs (`visible_gpu_indices`) against the baseline file's
    figures (`measure.baseline.load_baseline`)."""
    gpu_indices = visible_gpu_indices()
    return wait_until_cool(idle_states(baseline, gpu_indices), max_seconds, tolerance, poll_seconds)
