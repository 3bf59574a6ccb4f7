"""Idle baseline power per GPU, measured by sampling and cached in a JSON file.

A cached baseline is reused while it is younger than `max_age_s`. Once it is older
than `recheck_after_s`, a short re-check samples idle power again: when any GPU
drifted by more than `drift_tolerance` (10 %), the full baseline is measured again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llenergymeasure.measure import nvml

log = logging.getLogger(__name__)

BASELINE_VERSION = 1


@dataclass(frozen=True)
class BaselinePolicy:
    """When a cached baseline is reused, re-checked or measured again."""

    max_age_s: float = 24 * 3600.0
    recheck_after_s: float = 600.0
    recheck_seconds: float = 3.0
    drift_tolerance: float = 0.10
    interval_s: float = 0.1


class GpuBaseline(BaseModel):
    index: int
    uuid: str | None = None
    power_w: float = Field(ge=0.0)
    # read at the end of the idle sampling; thermal gaps wait for the GPU to return near it
    temperature_c: float | None = None


class BaselineFile(BaseModel):
    """What the cache file (state dir `baseline.json`) holds."""

    model_config = ConfigDict(extra="ignore")

    baseline_version: int = BASELINE_VERSION
    measured_at: float = Field(description="Unix time of the full measurement")
    checked_at: float = Field(description="Unix time of the last full measurement or re-check")
    seconds: float
    gpus: list[GpuBaseline]

    def power_w(self) -> list[float]:
        return [gpu.power_w for gpu in self.gpus]

    def describe(self) -> dict[str, Any]:
        return {
            **self.model_dump(),
            "measured_at_iso": datetime.fromtimestamp(self.measured_at, UTC).isoformat(),
        }


def sample_idle_power(
    gpu_indices: list[int], seconds: float, interval_s: float = 0.1
) -> list[float] | None:
    """Mean power per GPU over `seconds`; None when a GPU gave no power reading."""
    readings: list[list[float]] = [[] for _ in gpu_indices]
    deadline = time.monotonic() + seconds
    while True:
        for slot, index in zip(readings, gpu_indices, strict=True):
            watts = nvml.power_w(index)
            if watts is not None:
                slot.append(watts)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval_s, remaining))
    if any(not slot for slot in readings):
        return None
    return [fmean(slot) for slot in readings]


def drifted(cached_w: list[float], fresh_w: list[float], tolerance: float) -> bool:
    """True when any GPU's idle power moved by more than `tolerance` (relative)."""
    return any(
        abs(fresh - cached) > tolerance * max(cached, 1e-9)
        for cached, fresh in zip(cached_w, fresh_w, strict=True)
    )


def load_baseline(path: Path) -> BaselineFile | None:
    """The cached baseline, or None when missing or unreadable (a cache: it is re-measured)."""
    try:
        return BaselineFile.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("%s: unreadable idle baseline cache, measuring again (%s)", path, exc)
        return None


def save_baseline(path: Path, baseline: BaselineFile) -> None:
    """Atomic write: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(baseline.describe(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _matches(cached: BaselineFile, gpu_indices: list[int], uuids: list[str | None]) -> bool:
    return [gpu.index for gpu in cached.gpus] == gpu_indices and [
        gpu.uuid for gpu in cached.gpus
    ] == uuids


def idle_baseline(
    gpu_indices: list[int],
    seconds: float,
    cache_path: Path | None,
    policy: BaselinePolicy = BaselinePolicy(),
    clock: Callable[[], float] = time.time,
) -> list[float] | None:
    """Idle power (W) per GPU of `gpu_indices`; None without NVML, GPUs or power readings."""
    if not gpu_indices or not nvml.available():
        return None
    uuids = [nvml.uuid(index) for index in gpu_indices]
    cached = load_baseline(cache_path) if cache_path is not None else None
    if (
        cached is not None
        and _matches(cached, gpu_indices, uuids)
        and clock() - cached.measured_at <= policy.max_age_s
    ):
        still_valid = _recheck(cached, seconds, cache_path, policy, clock)
        if still_valid is not None:
            return still_valid
    return _measure(gpu_indices, uuids, seconds, cache_path, policy, clock)


def _recheck(
    cached: BaselineFile,
    seconds: float,
    cache_path: Path | None,
    policy: BaselinePolicy,
    clock: Callable[[], float],
) -> list[float] | None:
    """The cached baseline when recently checked or still within tolerance, else None."""
    if clock() - cached.checked_at <= policy.recheck_after_s:
        return cached.power_w()
    gpu_indices = [gpu.index for gpu in cached.gpus]
    fresh = sample_idle_power(gpu_indices, min(policy.recheck_seconds, seconds), policy.interval_s)
    if fresh is None or drifted(cached.power_w(), fresh, policy.drift_tolerance):
        log.info("idle power drifted by more than %.0f %%", policy.drift_tolerance * 100)
        return None
    _save(cache_path, cached.model_copy(update={"checked_at": clock()}))
    return cached.power_w()


def _measure(
    gpu_indices: list[int],
    uuids: list[str | None],
    seconds: float,
    cache_path: Path | None,
    policy: BaselinePolicy,
    clock: Callable[[], float],
) -> list[float] | None:
    measured = sample_idle_power(gpu_indices, seconds, policy.interval_s)
    if measured is None:
        return None
    stamp = clock()
    baseline = BaselineFile(
        measured_at=stamp,
        checked_at=stamp,
        seconds=seconds,
        gpus=[
            GpuBaseline(
                index=index,
                uuid=uuid,
                power_w=round(watts, 3),
                temperature_c=nvml.temperature_c(index),
            )
            for index, uuid, watts in zip(gpu_indices, uuids, measured, strict=True)
        ],
    )
    _save(cache_path, baseline)
    return baseline.power_w()


def _save(cache_path: Path | None, baseline: BaselineFile) -> None:
    if cache_path is not None:
        save_baseline(cache_path, baseline)
