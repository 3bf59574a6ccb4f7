"""How long a campaign still has to run: the ETA of the progress lines and `lem status`.

Each host runs its share one experiment after the other, and hosts run in parallel.
A host's pace is the median interval between two of its experiments finishing, which
holds everything an experiment costs on that host (gap, health check, load, warmup,
window); the median ignores the one long interval of a resumed campaign. The ETA is the
slowest host's: remaining experiments x its pace. A host not measured yet takes the
median pace of the others.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime

from llenergymeasure.host.manifest import Manifest


def eta_seconds(
    intervals: Mapping[str, Sequence[float]], remaining: Mapping[str, int]
) -> float | None:
    """Seconds until every host is done, or None when no interval was measured yet."""
    paces = {host: statistics.median(values) for host, values in intervals.items() if values}
    if not paces:
        return None
    fallback = statistics.median(paces.values())
    return max(
        (count * paces.get(host, fallback) for host, count in remaining.items() if count > 0),
        default=0.0,
    )


def format_duration(seconds: float) -> str:
    """`42 s`, `12m05s`, `3h07m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _finished_times(manifest: Manifest) -> list[datetime]:
    times = []
    for entry in manifest.entries.values():
        if entry.status in ("completed", "failed") and entry.completed_at:
            try:
                times.append(datetime.fromisoformat(entry.completed_at))
            except ValueError:
                continue
    return sorted(times)


def manifests_eta(manifests: Sequence[Manifest]) -> float | None:
    """The ETA of the campaigns these manifests (one per host) describe; None if unknown."""
    intervals: dict[str, list[float]] = {}
    remaining: dict[str, int] = {}
    for manifest in manifests:
        key = f"{manifest.campaign_name}/{manifest.host}"
        times = _finished_times(manifest)
        intervals[key] = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        remaining[key] = sum(e.status in ("pending", "running") for e in manifest.entries.values())
    return eta_seconds(intervals, remaining)


class Pace:
    """Per-host intervals between experiments finishing, as the campaign callback sees them.

    `started` marks a host's first experiment start (its first interval counts from
    there); `finished` records an interval; `skipped` (an experiment completed before,
    which takes no time) moves the mark without recording one.
    """

    def __init__(self) -> None:
        self.intervals: dict[str, list[float]] = {}
        self._mark: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def started(self, host: str, now: float) -> None:
        self._start[host] = now
        self._mark.setdefault(host, now)

    def finished(self, host: str, now: float, skipped: bool = False) -> float | None:
        """Record the end of an experiment on `host`; its own duration when its start is known."""
        begun = self._start.pop(host, None)
        if not skipped and host in self._mark:
            self.intervals.setdefault(host, []).append(now - self._mark[host])
        self._mark[host] = now
        return None if begun is None or skipped else now - begun

    def line_suffix(self, status: str, duration: float | None, remaining: Mapping[str, int]) -> str:
        """`, completed in 14 s; 12 left, ETA 3m10s` for a progress line."""
        text = ""
        if duration is not None:
            took = format_duration(duration)
            text = f", completed in {took}" if status == "completed" else f" (after {took})"
        eta = eta_seconds(self.intervals, remaining)
        left = sum(remaining.values())
        if left == 0:
            return text + "; campaign done"
        if eta is not None:
            text += f"; {left} left, ETA {format_duration(eta)}"
        return text
