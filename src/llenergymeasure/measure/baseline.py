"""Idle baseline power per GPU, measured while the GPU is idle and cached in a JSON file.

Each GPU has its own entry, keyed by its UUID: an experiment on one GPU of a host
reads and refreshes only that GPU's entry, never the others'. Idle power is the energy
counter's delta over the idle period divided by its length (`energy_counter`); on GPUs
without the counter (before Volta), the mean of power samples (`power_samples`).

A cached entry is reused while it is younger than `max_age_s`. Once it was last checked
more than `recheck_after_s` ago, a short re-check measures again: beyond
`drift_tolerance` (10 %) the entry is measured again in full.

Idle means idle:
- a caller whose GPU is busy (a model loaded on it) passes `gpu_idle=False` and gets
  cached values only, never a re-check or a new entry;
- before a re-check or a measurement, the thermal waiter (measure/thermal.py) waits,
  capped at `settle_max_s`, until the GPU is back near its earlier idle temperature and
  power (just after an unload or a hand-over the card is still warm); a GPU with no
  earlier idle figure waits, within the same cap, until its temperature and power have
  stopped falling;
- a figure taken when that wait hit its cap never replaces a lower one: the lower stays.
Each entry records whether it was measured settled, how that was judged and how long
it waited, so a result can say so (`energy.idle_baseline_conditions`). The worker
measures before it loads a model.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llenergymeasure.contracts.result import IdleConditions, IdleMethod, SettledBy
from llenergymeasure.files import atomic_write_text
from llenergymeasure.measure import nvml
from llenergymeasure.measure.thermal import (
    CoolingTolerance,
    GpuState,
    SteadyTolerance,
    wait_until_cool,
    wait_until_steady,
)

log = logging.getLogger(__name__)

# 2: one entry per GPU with its own times and method. Files of version 1 could hold
# values measured with a model loaded: they are measured again.
BASELINE_VERSION = 2


@dataclass(frozen=True)
class BaselinePolicy:
    """When a cached baseline is reused, re-checked or measured again."""

    max_age_s: float = 24 * 3600.0
    recheck_after_s: float = 600.0
    recheck_seconds: float = 3.0
    drift_tolerance: float = 0.10
    interval_s: float = 0.1
    # The counter moves in steps of about 100 ms of energy: below this, sample power instead.
    counter_min_seconds: float = 1.0
    # Before measuring: wait (at most this long) until the GPU is back near its earlier idle.
    settle_max_s: float = 120.0
    settle_poll_s: float = 1.0
    settle_tolerance: CoolingTolerance = field(default_factory=CoolingTolerance)
    # With no earlier idle figure: wait until temperature and power stopped falling.
    settle_steady: SteadyTolerance = field(default_factory=SteadyTolerance)


# What the worker and `lem baseline` use (the latter's --settle-max-seconds replaces the cap).
DEFAULT_POLICY = BaselinePolicy()


class GpuBaseline(BaseModel):
    index: int = Field(description="NVML index when measured (entries are matched by uuid)")
    uuid: str | None = None
    power_w: float = Field(ge=0.0)
    # read at the end of the idle period; thermal gaps wait for the GPU to return near it
    temperature_c: float | None = None
    method: IdleMethod = "power_samples"
    seconds: float | None = None
    measured_at: float | None = Field(None, description="Unix time; None: the file's")
    checked_at: float | None = Field(None, description="Unix time; None: the file's")
    settled: bool | None = Field(
        None, description="the thermal waiter's word before measuring (IdleConditions.settled)"
    )
    settled_by: SettledBy | None = None
    settle_waited_s: float | None = None

    def key(self) -> str:
        return gpu_key(self.uuid, self.index)

    def conditions(self, now: float) -> IdleConditions:
        age = None if self.measured_at is None else round(max(now - self.measured_at, 0.0), 3)
        return IdleConditions(
            power_w=self.power_w,
            temperature_c=self.temperature_c,
            age_s=age,
            method=self.method,
            seconds=self.seconds,
            settled=self.settled,
            settled_by=self.settled_by,
            settle_waited_s=self.settle_waited_s,
        )


class BaselineFile(BaseModel):
    """What the cache file (state dir `baseline.json`) holds."""

    model_config = ConfigDict(extra="ignore")

    baseline_version: int = BASELINE_VERSION
    measured_at: float = Field(description="Unix time of the latest full measurement")
    checked_at: float = Field(description="Unix time of the latest measurement or re-check")
    seconds: float
    gpus: list[GpuBaseline]

    @model_validator(mode="after")
    def _entry_times(self) -> BaselineFile:
        for gpu in self.gpus:
            gpu.measured_at = self.measured_at if gpu.measured_at is None else gpu.measured_at
            gpu.checked_at = self.checked_at if gpu.checked_at is None else gpu.checked_at
            gpu.seconds = self.seconds if gpu.seconds is None else gpu.seconds
        return self

    def power_w(self) -> list[float]:
        return [gpu.power_w for gpu in self.gpus]

    def entry(self, uuid: str | None, index: int) -> GpuBaseline | None:
        """This GPU's entry: by UUID, or by index for a GPU that has none."""
        key = gpu_key(uuid, index)
        return next((gpu for gpu in self.gpus if gpu.key() == key), None)

    def describe(self) -> dict[str, Any]:
        return {
            **self.model_dump(),
            "measured_at_iso": datetime.fromtimestamp(self.measured_at, UTC).isoformat(),
        }


def gpu_key(uuid: str | None, index: int) -> str:
    return uuid if uuid else f"index:{index}"


@dataclass(frozen=True)
class IdleReading:
    power_w: float
    method: IdleMethod
    temperature_c: float | None


def measure_idle(
    gpu_indices: list[int], seconds: float, policy: BaselinePolicy = BaselinePolicy()
) -> list[IdleReading | None]:
    """Idle power per GPU over `seconds`: the energy counter's delta / time where the
    counter is readable and the period long enough, else the mean of power samples
    (None: neither)."""
    start = [nvml.total_energy_mj(index) for index in gpu_indices]
    started = time.monotonic()
    use_counter = seconds >= policy.counter_min_seconds
    sampled = [i for i, value in enumerate(start) if value is None or not use_counter]
    readings: dict[int, list[float]] = {slot: [] for slot in sampled}
    deadline = started + seconds
    while True:
        for slot in sampled:
            watts = nvml.power_w(gpu_indices[slot])
            if watts is not None:
                readings[slot].append(watts)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(policy.interval_s, remaining))
    end = [nvml.total_energy_mj(index) if use_counter else None for index in gpu_indices]
    elapsed = time.monotonic() - started
    results: list[IdleReading | None] = []
    for slot, index in enumerate(gpu_indices):
        before, after = start[slot], end[slot]
        if slot not in readings and before is not None and after is not None:
            watts, method = (after - before) / 1000.0 / elapsed, "energy_counter"
        elif readings.get(slot):
            watts, method = fmean(readings[slot]), "power_samples"
        else:
            results.append(None)
            continue
        results.append(IdleReading(max(watts, 0.0), method, nvml.temperature_c(index)))
    return results


def drifted(cached_w: list[float], fresh_w: list[float], tolerance: float) -> bool:
    """True when any GPU's idle power moved by more than `tolerance` (relative)."""
    return any(
        abs(fresh - cached) > tolerance * max(cached, 1e-9)
        for cached, fresh in zip(cached_w, fresh_w, strict=True)
    )


def load_baseline(path: Path) -> BaselineFile | None:
    """The cached baseline, or None when missing, unreadable or of another version."""
    try:
        loaded = BaselineFile.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("%s: unreadable idle baseline cache, measuring again (%s)", path, exc)
        return None
    if loaded.baseline_version != BASELINE_VERSION:
        log.info("%s: baseline of version %s, measuring again", path, loaded.baseline_version)
        return None
    return loaded


def save_baseline(path: Path, baseline: BaselineFile) -> None:
    """Atomic write: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(baseline.describe(), indent=2))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-merge-write of `path` between the services sharing the state dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def merge_entries(path: Path, entries: list[GpuBaseline], clock: Callable[[], float]) -> None:
    """Write `entries` into the cache, replacing those of the same GPUs, keeping the others."""
    with _locked(path):
        current = load_baseline(path)
        kept = [] if current is None else current.gpus
        keys = {entry.key() for entry in entries}
        gpus = [gpu for gpu in kept if gpu.key() not in keys] + entries
        stamp = clock()
        measured = [gpu.measured_at for gpu in gpus if gpu.measured_at is not None]
        save_baseline(
            path,
            BaselineFile(
                measured_at=max(measured, default=stamp),
                checked_at=stamp,
                seconds=max((gpu.seconds or 0.0 for gpu in gpus), default=0.0),
                gpus=gpus,
            ),
        )


def idle_baseline(
    gpu_indices: list[int],
    seconds: float,
    cache_path: Path | None,
    policy: BaselinePolicy | None = None,
    clock: Callable[[], float] = time.time,
    *,
    gpu_idle: bool = True,
) -> list[float] | None:
    """Idle power (W) per GPU of `gpu_indices` (see `idle_entries`)."""
    entries = idle_entries(gpu_indices, seconds, cache_path, policy, clock, gpu_idle=gpu_idle)
    return None if entries is None else [entry.power_w for entry in entries]


def idle_entries(
    gpu_indices: list[int],
    seconds: float,
    cache_path: Path | None,
    policy: BaselinePolicy | None = None,
    clock: Callable[[], float] = time.time,
    *,
    gpu_idle: bool = True,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[GpuBaseline] | None:
    """The idle entry per GPU of `gpu_indices`; None without NVML, readings or (when
    `gpu_idle` is False) an idle value cached for every one of them. `policy` defaults to
    `DEFAULT_POLICY`; `monotonic` and `sleep` pace the wait for the GPU to settle."""
    if not gpu_indices or not nvml.available():
        return None
    policy = policy or DEFAULT_POLICY
    uuids = [nvml.uuid(index) for index in gpu_indices]
    cached = load_baseline(cache_path) if cache_path is not None else None
    now = clock()
    # Any age: an expired idle figure still says what "back near idle" is.
    known = [
        cached.entry(uuid, index) if cached is not None else None
        for index, uuid in zip(gpu_indices, uuids, strict=True)
    ]
    entries = [
        entry
        if entry is not None and now - (entry.measured_at or 0.0) <= policy.max_age_s
        else None
        for entry in known
    ]
    if not gpu_idle:
        # Busy GPUs: a re-check or a measurement now would store a warm value as idle.
        return None if any(e is None for e in entries) else [e for e in entries if e]
    due = [slot for slot, entry in enumerate(entries) if _due(entry, now, policy)]
    if not due:
        return [e for e in entries if e]
    settled = _settle(
        [gpu_indices[slot] for slot in due], [known[slot] for slot in due], policy, monotonic, sleep
    )
    settled_of = dict(zip(due, settled, strict=True))
    rechecked = _recheck(gpu_indices, entries, seconds, policy, clock, settled_of)
    entries = [rechecked.get(slot, entry) for slot, entry in enumerate(entries)]
    changed = [entry for entry in rechecked.values() if entry is not None]
    missing = [slot for slot, entry in enumerate(entries) if entry is None]
    if missing:
        measured = _measure([gpu_indices[slot] for slot in missing], seconds, policy, clock)
        if measured is None:
            return None
        for slot, entry in zip(missing, measured, strict=True):
            entry.settled, entry.settled_by, entry.settle_waited_s = settled_of[slot]
            entries[slot] = keep_lower_unless_settled(known[slot], entry, clock())
            changed.append(entries[slot])
    if cache_path is not None and changed:
        merge_entries(cache_path, changed, clock)
    return [entry for entry in entries if entry is not None]


def _due(entry: GpuBaseline | None, now: float, policy: BaselinePolicy) -> bool:
    """Missing (or expired), or last checked more than `recheck_after_s` ago."""
    return entry is None or now - (entry.checked_at or 0.0) > policy.recheck_after_s


# (settled, how it was judged, seconds waited)
Settling = tuple[bool, SettledBy, float]


def _settle(
    gpu_indices: list[int],
    known: list[GpuBaseline | None],
    policy: BaselinePolicy,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[Settling]:
    """Wait, within one `settle_max_s`, until the GPUs with a known idle are back near it
    and the others' temperature and power stopped falling. Per GPU: (settled: True when
    it did, False when the wait hit the cap; how it was judged; seconds waited)."""
    started = monotonic()
    judged = [(i, e) for i, e in zip(gpu_indices, known, strict=True) if e is not None]
    fresh = [i for i, e in zip(gpu_indices, known, strict=True) if e is None]
    outcome: dict[int, tuple[bool, SettledBy]] = {}
    if judged:
        idle = [GpuState(index, entry.temperature_c, entry.power_w) for index, entry in judged]
        near = wait_until_cool(
            idle,
            policy.settle_max_s,
            policy.settle_tolerance,
            policy.settle_poll_s,
            monotonic,
            sleep,
        )
        outcome |= {index: (near.reason == "cool", "earlier_idle") for index, _ in judged}
    if fresh:
        left = max(policy.settle_max_s - (monotonic() - started), 0.0)
        steady = wait_until_steady(
            fresh, left, policy.settle_steady, policy.settle_poll_s, monotonic, sleep
        )
        outcome |= {index: (steady.reason == "steady", "steady") for index in fresh}
    waited = round(monotonic() - started, 3)
    capped = [index for index in gpu_indices if not outcome[index][0]]
    if capped:
        log.warning(
            "GPU(s) %s not settled after %.0f s: an idle figure taken now is kept only if "
            "lower than the one before",
            capped,
            waited,
        )
    return [(*outcome[index], waited) for index in gpu_indices]


def keep_lower_unless_settled(
    before: GpuBaseline | None, new: GpuBaseline, now: float
) -> GpuBaseline:
    """`new`, unless it is higher than `before` and was not taken settled: a warm card
    reads high, so then `before` stays (re-checked now)."""
    if before is None or new.settled or new.power_w <= before.power_w:
        return new
    log.warning(
        "GPU %s: idle %.1f W taken before the GPU settled is above the %.1f W before: kept %.1f W",
        new.uuid or new.index,
        new.power_w,
        before.power_w,
        before.power_w,
    )
    return before.model_copy(update={"checked_at": now})


def _recheck(
    gpu_indices: list[int],
    entries: list[GpuBaseline | None],
    seconds: float,
    policy: BaselinePolicy,
    clock: Callable[[], float],
    settled_of: dict[int, Settling],
) -> dict[int, GpuBaseline | None]:
    """Re-check the entries due (the slots of `settled_of` that have one): slot -> the
    entry with a new `checked_at`, or None when it drifted (or could not be read) and must
    be measured again. A drift upwards while the GPU had not settled keeps the entry."""
    due = [slot for slot in settled_of if entries[slot] is not None]
    if not due:
        return {}
    fresh = measure_idle(
        [gpu_indices[slot] for slot in due], min(policy.recheck_seconds, seconds), policy
    )
    outcome: dict[int, GpuBaseline | None] = {}
    for slot, reading in zip(due, fresh, strict=True):
        entry = entries[slot]
        assert entry is not None
        stays = entry.model_copy(update={"checked_at": clock()})
        if reading is None:
            outcome[slot] = None
        elif not drifted([entry.power_w], [reading.power_w], policy.drift_tolerance):
            outcome[slot] = stays
        elif reading.power_w > entry.power_w and not settled_of[slot][0]:
            log.info("GPU %s: re-check reads high before settling: kept", entry.uuid or entry.index)
            outcome[slot] = stays
        else:
            log.info("GPU %s: idle power drifted beyond tolerance", entry.uuid or entry.index)
            outcome[slot] = None
    return outcome


def _measure(
    gpu_indices: list[int],
    seconds: float,
    policy: BaselinePolicy,
    clock: Callable[[], float],
) -> list[GpuBaseline] | None:
    """New entries for `gpu_indices`; None when a GPU gave no reading."""
    readings = measure_idle(gpu_indices, seconds, policy)
    if any(reading is None for reading in readings):
        return None
    stamp = clock()
    return [
        GpuBaseline(
            index=index,
            uuid=nvml.uuid(index),
            power_w=round(reading.power_w, 3),
            temperature_c=reading.temperature_c,
            method=reading.method,
            seconds=seconds,
            measured_at=stamp,
            checked_at=stamp,
        )
        for index, reading in zip(gpu_indices, readings, strict=True)
        if reading is not None
    ]
