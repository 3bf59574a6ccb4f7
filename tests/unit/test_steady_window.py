"""The steady-state window's edges on synthetic request traces: a ramp, a steady phase,
a drain, and runs that must be flagged unstable (measure/steady.py)."""

from __future__ import annotations

import pytest

from llenergymeasure.measure.steady import (
    ServedRequest,
    concurrency_start,
    in_flight_steps,
    mean_in_flight,
    steady_window,
    tokens_inside,
    trace_energy,
)


def closed_loop(
    target: int, total: int, service_s: float, ttft_s: float = 0.1, ramp_gap_s: float = 0.5
) -> list[ServedRequest]:
    """A closed loop: the first `target` requests arrive `ramp_gap_s` apart (the ramp); each
    later one arrives when one finishes (steady); after `total` no more arrive (the drain)."""
    requests: list[ServedRequest] = []
    slots = [i * ramp_gap_s for i in range(target)]  # when each slot is free next
    for _ in range(total):
        slot = min(range(target), key=lambda i: slots[i])
        arrival = slots[slot]
        end = arrival + service_s
        requests.append(ServedRequest(arrival, arrival + ttft_s, end, output_tokens=10))
        slots[slot] = end
    return requests


def open_loop(rate: float, total: int, service_s: float) -> list[ServedRequest]:
    """Evenly spaced arrivals at `rate` requests/s, each served in `service_s`."""
    return [
        ServedRequest(i / rate, i / rate + 0.05, i / rate + service_s, output_tokens=8)
        for i in range(total)
    ]


def test_concurrency_window_starts_when_the_ramp_is_full_and_ends_when_the_drain_starts() -> None:
    requests = closed_loop(target=4, total=40, service_s=4.0)
    window = steady_window(requests, "concurrency", max_concurrency=4, min_window_seconds=10.0)
    # the 4th request arrives at 1.5 s and has its first token at 1.6 s: the ramp is over
    assert window.start_s == pytest.approx(1.6)
    # the last arrival: after it the loop sends nothing and in-flight drops
    assert window.end_s == pytest.approx(max(r.arrival_s for r in requests))
    assert window.mean_in_flight == pytest.approx(4.0)
    assert window.stable and window.unstable_reasons == []
    # neither the ramp's first-token-less start nor the drain's tail is inside
    assert window.requests_completed < len(requests)


def test_rate_window_skips_the_warmup_and_the_ramp_and_stops_at_the_last_arrival() -> None:
    requests = open_loop(rate=2.0, total=100, service_s=3.0)  # steady level: 6 in flight
    window = steady_window(requests, "rate", warmup_requests=10, min_window_seconds=20.0)
    # request 10 arrives at 5.0 s; the ramp (in flight 1..6) ended at 2.5 s: start at 5.0 s
    assert window.start_s == pytest.approx(5.0)
    assert window.end_s == pytest.approx(49.5)
    assert window.mean_in_flight == pytest.approx(6.0, abs=0.1)
    assert window.stable


def test_rate_window_waits_for_the_in_flight_count_when_the_ramp_outlasts_the_warmup() -> None:
    # no warm-up and a slow service: in flight climbs 1, 2, ... 10 over the first 10 s
    requests = open_loop(rate=1.0, total=60, service_s=10.0)
    window = steady_window(requests, "rate", warmup_requests=0, min_window_seconds=5.0)
    # the median level is 10; the window opens once 5 are in flight (the 5th arrival, 4 s)
    assert window.start_s == pytest.approx(4.0)


def test_drain_is_outside_the_window_and_tokens_are_prorated_at_its_edges() -> None:
    requests = open_loop(rate=1.0, total=30, service_s=2.0)
    window = steady_window(requests, "rate", warmup_requests=5, min_window_seconds=1.0)
    assert window.end_s == pytest.approx(29.0)
    # the last request (arrives at 29 s, ends at 31 s) finished in the drain: not counted
    assert window.requests_completed == 25  # those ending at 5, 6, ..., 29 s
    whole = sum(r.output_tokens for r in requests)
    assert 0 < window.output_tokens < whole
    # the last arrival's first token (29.05 s) is in the drain; the one before it (first
    # token at 28.05 s, end at 30 s) counts its first token and its share of the other 7
    assert tokens_inside(requests[-1], window.start_s, window.end_s) == 0.0
    straddling = tokens_inside(requests[-2], window.start_s, window.end_s)
    assert straddling == pytest.approx(1 + 7 * (29.0 - 28.05) / (30.0 - 28.05))


def test_short_window_is_unstable_with_the_reason() -> None:
    requests = open_loop(rate=4.0, total=30, service_s=0.5)
    window = steady_window(requests, "rate", warmup_requests=5, min_window_seconds=20.0)
    assert not window.stable
    assert any("shorter than 20 s" in reason for reason in window.unstable_reasons)


def test_concurrency_below_the_target_is_unstable() -> None:
    # the server never holds 8 at once: requests arrive 1 s apart and take 2 s
    requests = open_loop(rate=1.0, total=40, service_s=2.0)
    window = steady_window(requests, "concurrency", max_concurrency=8, min_window_seconds=1.0)
    assert not window.stable
    assert any("never in flight" in reason for reason in window.unstable_reasons)
    assert any("below 0.85 x max_concurrency 8" in reason for reason in window.unstable_reasons)


def test_failed_requests_count_neither_as_completed_nor_as_tokens() -> None:
    good = ServedRequest(0.0, 0.1, 1.0, output_tokens=5)
    failed = ServedRequest(0.0, None, 0.5, output_tokens=0, error="HTTP 500")
    assert tokens_inside(failed, 0.0, 2.0) == 0.0
    assert concurrency_start([good, failed], 2) is None
    assert steady_window([good, failed], "rate", min_window_seconds=0.0).requests_completed <= 1


def test_in_flight_steps_and_time_average() -> None:
    requests = [ServedRequest(0.0, 0.1, 2.0), ServedRequest(1.0, 1.1, 3.0)]
    steps = in_flight_steps(requests)
    assert steps == [(0.0, 1), (1.0, 2), (2.0, 1), (3.0, 0)]
    assert mean_in_flight(steps, 0.0, 3.0) == pytest.approx(4.0 / 3.0)
    assert mean_in_flight(steps, 1.0, 2.0) == pytest.approx(2.0)


def test_trace_energy_interpolates_the_edges_and_refuses_an_uncovered_window() -> None:
    times, power = [0.0, 1.0, 2.0, 3.0], [100.0, 100.0, 200.0, 200.0]
    assert trace_energy(times, power, 0.0, 3.0) == pytest.approx(100 + 150 + 200)
    assert trace_energy(times, power, 0.5, 1.5) == pytest.approx(50 + 0.5 * (100 + 150) / 2)
    assert trace_energy(times, power, -1.0, 2.0) is None


def test_an_empty_trace_has_no_window() -> None:
    with pytest.raises(ValueError, match="at least one"):
        steady_window([], "rate")
