"""Stopping an experiment past its timeout inside `lem worker` (Worker.cancel).

The real Worker, in this process, with a stand-in CPU backend whose `generate` blocks
like a hung engine call until the test lets it return: the cancel must be answered
while the experiment runs, stop it at its next stage, free the worker for the next
experiment, and keep a queued request from ever starting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.wire import (
    Done,
    Failed,
    FinalReply,
    Progress,
    RequestIdentity,
    RunRequest,
    StatusReply,
    StatusRequest,
)
from llenergymeasure.runner.backends.base import BatchOutcome, RequestRecord
from llenergymeasure.runner.experiment import LoadedModel
from llenergymeasure.runner.loadkey import load_key
from llenergymeasure.runner.worker import Worker


class HungBackend:
    """`generate` waits for `release`, as an engine call that does not return would."""

    device = "cpu"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        self.calls += 1
        self.entered.set()
        self.release.wait()
        records = [RequestRecord(input_tokens=4, output_tokens=8, latency_s=0.01) for _ in prompts]
        return BatchOutcome(records=records)

    def synchronize(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def versions(self) -> dict[str, str]:
        return {}


@pytest.fixture
def backend() -> Iterator[HungBackend]:
    hung = HungBackend()
    yield hung
    hung.release.set()  # never leave a request thread blocked


@pytest.fixture
def worker(backend: HungBackend) -> Worker:
    def load(config: ExperimentConfig) -> LoadedModel:
        return LoadedModel(backend=backend, load_key=load_key(config), load_seconds=0.5)

    return Worker(loader=load)


def request(exp_id: str, tmp_path: Path) -> RunRequest:
    config = {
        "config_name": "hung",
        "backend": "pytorch",
        "model": {"path": str(tmp_path / "model")},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 2},
        "measurement": {"warmup_prompts": 1, "min_window_seconds": 0.05, "baseline_seconds": 0},
    }
    return RunRequest(
        config=config,
        config_source=f"{exp_id}.json",
        out_dir=str(tmp_path / exp_id),
        identity=RequestIdentity(exp_id=exp_id),
    )


def in_thread(
    worker: Worker,
    run: RunRequest,
    replies: dict[str, FinalReply],
    emit: Callable[[Progress], None],
) -> threading.Thread:
    name = run.identity.exp_id or ""
    thread = threading.Thread(target=lambda: replies.update({name: worker.run_in_turn(run, emit)}))
    thread.start()
    return thread


def ignore(progress: Progress) -> None:
    return None


def test_a_running_experiment_asked_to_stop_fails_at_its_next_stage_and_frees_the_worker(
    worker: Worker, backend: HungBackend, tmp_path: Path
) -> None:
    replies: dict[str, FinalReply] = {}
    running = in_thread(worker, request("first", tmp_path), replies, ignore)
    backend.entered.wait()  # inside the warmup's engine call

    answer = worker.handle(StatusRequest(cancel="first"), ignore)  # answered while it hangs
    backend.release.set()
    running.join()

    assert isinstance(answer, StatusReply) and answer.stats.busy_with == "first"
    reply = replies["first"]
    assert isinstance(reply, Failed)
    assert reply.cause == "first: stopped on request (past its timeout)"
    assert backend.calls == 1  # the window never started
    assert not (tmp_path / "first" / "result.json").exists()
    assert worker.snapshot().busy_with is None
    following = worker.run_in_turn(request("second", tmp_path), ignore)
    assert isinstance(following, Done)
    assert following.stats.loads == 1  # the model stayed loaded
    assert (tmp_path / "second" / "result.json").exists()


def test_a_request_waiting_its_turn_never_starts_once_cancelled(
    worker: Worker, backend: HungBackend, tmp_path: Path
) -> None:
    replies: dict[str, FinalReply] = {}
    running = in_thread(worker, request("first", tmp_path), replies, ignore)
    backend.entered.wait()
    queued = threading.Event()
    waiting = in_thread(
        worker,
        request("second", tmp_path),
        replies,
        lambda progress: queued.set() if progress.stage == "queued" else None,
    )
    queued.wait()

    cancelled = worker.cancel("second")
    backend.release.set()
    running.join()
    calls_for_first = backend.calls
    waiting.join()

    assert cancelled is True
    assert isinstance(replies["first"], Done)
    second = replies["second"]
    assert isinstance(second, Failed)
    assert second.cause == "second: stopped on request before it started"
    assert backend.calls == calls_for_first  # no engine call for the cancelled one
    assert not (tmp_path / "second" / "result.json").exists()


def test_a_cancel_for_an_experiment_the_worker_does_not_have_is_forgotten(
    worker: Worker, backend: HungBackend, tmp_path: Path
) -> None:
    backend.release.set()

    cancelled = worker.cancel("later")
    reply = worker.run_in_turn(request("later", tmp_path), ignore)

    assert cancelled is False
    assert isinstance(reply, Done)  # a later run of the same id is not stopped by it
