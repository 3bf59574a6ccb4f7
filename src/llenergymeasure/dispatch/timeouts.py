"""An experiment past its timeout: stop it in the worker, or restart the frozen service.

The exec that `lem_experiment` runs is a thin client (`lem experiment`), stopped by
coreutils `timeout`; the work itself runs in the service's `lem worker`, which goes on
unless told, holding its run lock, so that every later experiment would queue behind
it. The worker answers status requests on their own thread: a live worker answers
within seconds even while it measures, one that does not is frozen (a stopped
process, a native call holding the GIL) and only a restart of its service frees the
GPU and the lock. See docs/reliability.md ("An experiment hangs").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The worker's `WorkerStats` (contracts/wire.py) as the JSON `lem worker --status`
# prints: the host side reads it plain, no pydantic.
WorkerStatus = dict[str, Any]

# After the cancel, how long the worker may take to leave the experiment (it stops
# between stages: the end of the warmup or of the window) before the service restarts.
CANCEL_GRACE_SECONDS = 30.0

# probe(exp_id to cancel, or None) -> the worker's statistics, None when it did not answer.
Probe = Callable[[str | None], WorkerStatus | None]


@dataclass(frozen=True)
class TimeoutOutcome:
    """What became of the timed-out experiment; `restart`: the service must restart."""

    restart: bool
    detail: str


def stop_timed_out(
    exp_id: str,
    probe: Probe,
    grace_seconds: float = CANCEL_GRACE_SECONDS,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TimeoutOutcome:
    """Ask the worker to stop `exp_id`, then wait up to `grace_seconds` until it has.

    A worker that does not answer, or still runs `exp_id` at the limit, needs its
    service restarted. One queued behind another experiment is stopped by the cancel
    itself: it never starts.
    """
    stats = probe(exp_id)
    deadline = clock() + grace_seconds
    while True:
        if stats is None:
            return TimeoutOutcome(True, "its worker did not answer (frozen)")
        if stats.get("busy_with") != exp_id:
            return TimeoutOutcome(False, "stopped in the worker")
        if clock() >= deadline:
            return TimeoutOutcome(True, f"its worker did not stop it within {grace_seconds:g} s")
        sleep(min(poll_seconds, max(deadline - clock(), 0.0)))
        stats = probe(None)


def wait_for_worker(
    probe: Callable[[], WorkerStatus | None],
    limit_seconds: float,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WorkerStatus | None:
    """Poll `probe` until the worker answers; None when it has not after `limit_seconds`.

    A restarted service is healthy as soon as its socket file exists, and the killed
    worker leaves its file behind: only an answer says that the fresh worker serves.
    """
    deadline = clock() + limit_seconds
    while True:
        stats = probe()
        if stats is not None or clock() >= deadline:
            return stats
        sleep(min(poll_seconds, max(deadline - clock(), 0.0)))
