"""The steady-state window of a server-mode run, from its per-request records (pure).

A load generator's run has a ramp (requests start arriving, the server fills up), a
steady phase and a drain (no more arrivals; the last requests finish). Energy is
counted over the steady phase only (docs/server-mode.md):

- ``concurrency`` (ML.ENERGY's definition): from the first moment ``max_concurrency``
  requests are in flight *with their first token*, to the last arrival, after which
  the closed loop sends nothing more and the tail drains;
- ``rate``: from the arrival of the first request after the warm-up ones, or later,
  once the in-flight count has reached the steady level (half the median in-flight
  count between that arrival and the last one: the ramp is over), to the last
  arrival (the last arrivals then drain).

Times are seconds on one clock (the load generator's). Nothing here reads a device:
the caller turns the window's edges into energy (counters read at those instants, or
the power trace integrated between them).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

WindowDefinition = Literal["concurrency", "rate"]
# The ramp is over once the in-flight count reaches this fraction of its median level.
RAMP_FRACTION = 0.5


@dataclass(frozen=True)
class ServedRequest:
    """One request as the load generator saw it; a time it did not give is None."""

    arrival_s: float
    first_token_s: float | None
    end_s: float | None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None


@dataclass(frozen=True)
class SteadyWindow:
    definition: WindowDefinition
    start_s: float
    end_s: float
    requests_completed: int  # finished (without error) inside the window
    output_tokens: float  # generated inside the window (pro rata between first and last token)
    mean_in_flight: float  # time average of the requests sent and not finished
    stable: bool
    unstable_reasons: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def in_flight_steps(requests: Sequence[ServedRequest]) -> list[tuple[float, int]]:
    """(time, in-flight count from then on) at every arrival and end, in time order.

    A request is in flight from its arrival to its end (or its arrival's run's last
    instant when it never ended: a failed request counts until its recorded end only).
    """
    events: list[tuple[float, int]] = []
    for request in requests:
        events.append((request.arrival_s, 1))
        if request.end_s is not None:
            events.append((request.end_s, -1))
    events.sort(key=lambda event: (event[0], event[1]))  # ends before arrivals at one instant
    steps: list[tuple[float, int]] = []
    count = 0
    for time, delta in events:
        count += delta
        if steps and steps[-1][0] == time:
            steps[-1] = (time, count)
        else:
            steps.append((time, count))
    return steps


def mean_in_flight(steps: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """Time average of the step function `steps` over [start, end]."""
    if end <= start:
        return 0.0
    times = [t for t, _ in steps]
    index = bisect.bisect_right(times, start) - 1
    level = steps[index][1] if index >= 0 else 0
    area, cursor = 0.0, start
    for time, count in steps[index + 1 :]:
        if time >= end:
            break
        area += level * (time - cursor)
        cursor, level = time, count
    area += level * (end - cursor)
    return area / (end - start)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def rate_start(requests: Sequence[ServedRequest], warmup_requests: int) -> float:
    """After the warm-up requests, once the in-flight count has left the ramp."""
    arrivals = sorted(r.arrival_s for r in requests)
    after_warmup = arrivals[min(warmup_requests, len(arrivals) - 1)]
    last_arrival = arrivals[-1]
    steps = in_flight_steps(requests)
    levels = [count for time, count in steps if after_warmup <= time <= last_arrival]
    threshold = RAMP_FRACTION * _median(levels) if levels else 0.0
    for time, count in steps:
        if after_warmup <= time <= last_arrival and count >= threshold:
            return time
    return after_warmup


def concurrency_start(requests: Sequence[ServedRequest], target: int) -> float | None:
    """The first instant `target` requests are in flight with their first token; None: never."""
    events: list[tuple[float, int]] = []
    for request in requests:
        if request.first_token_s is not None:
            events.append((request.first_token_s, 1))
            if request.end_s is not None:
                events.append((request.end_s, -1))
    events.sort(key=lambda event: (event[0], event[1]))
    count = 0
    for time, delta in events:
        count += delta
        if count >= target:
            return time
    return None


def tokens_inside(request: ServedRequest, start: float, end: float) -> float:
    """Output tokens `request` generated inside [start, end]: the first at its first token,
    the rest spread evenly up to its end (the generator gives no per-token times)."""
    if not request.ok or request.output_tokens <= 0:
        return 0.0
    first = request.first_token_s if request.first_token_s is not None else request.end_s
    last = request.end_s
    assert first is not None and last is not None  # ok: end_s is set
    tokens = 1.0 if start <= first <= end else 0.0
    rest = request.output_tokens - 1
    if rest > 0:
        if last <= first:
            tokens += rest if start <= last <= end else 0.0
        else:
            overlap = max(0.0, min(end, last) - max(start, first))
            tokens += rest * overlap / (last - first)
    return tokens


def steady_window(
    requests: Sequence[ServedRequest],
    definition: WindowDefinition,
    *,
    warmup_requests: int = 0,
    max_concurrency: int | None = None,
    min_window_seconds: float = 20.0,
    min_in_flight_fraction: float = 0.85,
) -> SteadyWindow:
    """The steady-state window of `requests` (at least one), with its stability verdict."""
    if not requests:
        raise ValueError("no requests: a window needs at least one")
    reasons: list[str] = []
    last_arrival = max(r.arrival_s for r in requests)
    if definition == "concurrency":
        if max_concurrency is None:
            raise ValueError("a concurrency window needs max_concurrency")
        start = concurrency_start(requests, max_concurrency)
        if start is None:
            reasons.append(
                f"{max_concurrency} requests were never in flight with a first token together"
            )
            start = min(r.first_token_s or r.arrival_s for r in requests)
    else:
        start = rate_start(requests, warmup_requests)
    end = max(start, last_arrival)
    steps = in_flight_steps(requests)
    in_flight = mean_in_flight(steps, start, end)
    seconds = end - start
    if seconds < min_window_seconds:
        reasons.append(f"window of {seconds:.2f} s is shorter than {min_window_seconds:g} s")
    if definition == "concurrency" and max_concurrency is not None:
        floor = min_in_flight_fraction * max_concurrency
        if in_flight < floor:
            reasons.append(
                f"mean in-flight {in_flight:.2f} is below {min_in_flight_fraction:g} x "
                f"max_concurrency {max_concurrency}"
            )
    completed = completed_inside(requests, start, end)
    if not completed:
        reasons.append("no request finished inside the window")
    return SteadyWindow(
        definition=definition,
        start_s=start,
        end_s=end,
        requests_completed=len(completed),
        output_tokens=sum(tokens_inside(r, start, end) for r in requests),
        mean_in_flight=in_flight,
        stable=not reasons,
        unstable_reasons=reasons,
    )


def completed_inside(
    requests: Sequence[ServedRequest], start: float, end: float
) -> list[ServedRequest]:
    """The requests that finished without error inside [start, end] (latency, SLO figures)."""
    return [r for r in requests if r.ok and r.end_s is not None and start <= r.end_s <= end]


def value_at(times_s: Sequence[float], values: Sequence[float], t: float) -> float | None:
    """A sampled quantity at time `t`, linear between the samples around it (a power
    reading, or a cumulative energy counter's); None outside the samples."""
    if not times_s or t < times_s[0] or t > times_s[-1]:
        return None
    i = bisect.bisect_right(times_s, t) - 1
    if i >= len(times_s) - 1:
        return values[-1]
    t0, t1 = times_s[i], times_s[i + 1]
    return values[i] + (values[i + 1] - values[i]) * (t - t0) / (t1 - t0)


def trace_energy(
    times_s: Sequence[float], power_w: Sequence[float], start: float, end: float
) -> float | None:
    """Joules between `start` and `end` from a power trace (trapezoids, edges interpolated);
    None when the trace does not cover the window."""
    at_start, at_end = value_at(times_s, power_w, start), value_at(times_s, power_w, end)
    if at_start is None or at_end is None or end <= start:
        return None
    points = [(start, at_start)]
    points += [(t, p) for t, p in zip(times_s, power_w, strict=True) if start < t < end]
    points.append((end, at_end))
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in pairwise(points))
