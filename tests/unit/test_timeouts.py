"""An experiment past its timeout: the decision between "stopped in the worker" and
"restart the service" (dispatch/timeouts.py), on scripted worker answers and a fake clock.

The same decision on a real frozen worker, through ansible-playbook, is
tests/integration/test_hung_worker.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from fixtures.clock import FakeClock

from llenergymeasure.contracts.wire import WorkerStats
from llenergymeasure.dispatch.timeouts import WorkerStatus, stop_timed_out, wait_for_worker

EXP = "demo__bs1__c02"
SILENT = None  # the worker did not answer


def stats(busy_with: str | None) -> WorkerStatus:
    """The worker's answer as the host reads it: the wire contract's JSON."""
    answer = WorkerStats(pid=7, started_at="2026-01-01T00:00:00+00:00", busy_with=busy_with)
    return answer.model_dump(mode="json")


class ScriptedWorker:
    """Answers the probes in order with `answers` (the last one again when they run out)."""

    def __init__(self, *answers: WorkerStatus | None) -> None:
        self._answers: Iterator[WorkerStatus | None] = iter(answers)
        self._last = answers[-1]
        self.cancels: list[str | None] = []

    def __call__(self, cancel: str | None) -> WorkerStatus | None:
        self.cancels.append(cancel)
        self._last = next(self._answers, self._last)
        return self._last


def decide(worker: ScriptedWorker, grace: float = 30.0) -> tuple[bool, str]:
    clock = FakeClock()
    outcome = stop_timed_out(EXP, worker, grace, clock=clock, sleep=clock.sleep)
    return outcome.restart, outcome.detail


def test_a_worker_that_does_not_answer_is_frozen_and_its_service_restarts() -> None:
    worker = ScriptedWorker(SILENT)

    assert decide(worker) == (True, "its worker did not answer (frozen)")
    assert worker.cancels == [EXP]  # asked once, with the cancel: no wait for a frozen one


def test_an_idle_worker_after_the_cancel_needs_no_restart() -> None:
    worker = ScriptedWorker(stats(None))

    assert decide(worker) == (False, "stopped in the worker")
    assert worker.cancels == [EXP]


def test_a_busy_worker_that_stops_the_experiment_within_the_grace_needs_no_restart() -> None:
    worker = ScriptedWorker(stats(EXP), stats(EXP), stats(None))

    assert decide(worker) == (False, "stopped in the worker")
    assert worker.cancels == [EXP, None, None]  # the cancel once, then plain status


def test_a_worker_still_running_it_after_the_grace_is_restarted() -> None:
    worker = ScriptedWorker(stats(EXP))

    assert decide(worker, grace=5.0) == (True, "its worker did not stop it within 5 s")
    assert worker.cancels[0] == EXP and 5 <= len(worker.cancels) <= 7


def test_a_worker_that_stops_answering_while_it_stops_is_restarted() -> None:
    worker = ScriptedWorker(stats(EXP), SILENT)

    assert decide(worker) == (True, "its worker did not answer (frozen)")


def test_a_request_queued_behind_another_experiment_is_stopped_by_the_cancel_alone() -> None:
    # The worker measures something else; ours waited its turn and will never start.
    worker = ScriptedWorker(stats("demo__other__c01"))

    assert decide(worker) == (False, "stopped in the worker")


def test_a_restarted_service_is_ready_once_its_worker_answers_not_before() -> None:
    clock = FakeClock()
    worker = ScriptedWorker(SILENT, SILENT, stats(None))

    ready = wait_for_worker(lambda: worker(None), 60.0, clock=clock, sleep=clock.sleep)

    assert ready == stats(None) and clock.now == 2.0


def test_a_restarted_service_whose_worker_never_answers_is_not_ready() -> None:
    clock = FakeClock()

    ready = wait_for_worker(lambda: SILENT, 10.0, clock=clock, sleep=clock.sleep)

    assert ready is None and clock.now == 10.0
