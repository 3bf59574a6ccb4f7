"""The run's restart budget across its tasks on a host, and the health rule that may spend it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.dispatch.compose import Completed
from llenergymeasure.dispatch.restarts import (
    LEDGER,
    RestartBudget,
    health_problem,
    restart_within_budget,
)


def test_the_runs_tasks_share_one_count(tmp_path: Path) -> None:
    first = RestartBudget(tmp_path, "run-1", limit=2)
    assert first.allowed()
    first.record()
    # The run's next task (another loop, another segment) is a new process: it reads
    # what the first one made.
    second = RestartBudget(tmp_path, "run-1", limit=2)
    assert second.spent() == 1 and second.allowed()
    second.record()
    third = RestartBudget(tmp_path, "run-1", limit=2)
    assert third.spent() == 2 and not third.allowed()
    assert (first.made, second.made, third.made) == (1, 1, 0)


def test_another_run_starts_from_nothing(tmp_path: Path) -> None:
    RestartBudget(tmp_path, "run-1", limit=3).record()
    assert RestartBudget(tmp_path, "run-2", limit=3).spent() == 0


def test_without_a_run_id_a_task_counts_its_own_restarts_alone(tmp_path: Path) -> None:
    budget = RestartBudget(tmp_path, None, limit=1)
    budget.record()
    assert not budget.allowed()
    assert not (tmp_path / LEDGER).exists()
    assert RestartBudget(tmp_path, None, limit=1).allowed()


@pytest.mark.parametrize("ledger", ["", "{", "[]", '{"run_id": "run-1"}'])
def test_a_broken_ledger_counts_nothing_and_is_written_again(tmp_path: Path, ledger: str) -> None:
    (tmp_path / LEDGER).write_text(ledger, encoding="utf-8")
    budget = RestartBudget(tmp_path, "run-1", limit=3)
    assert budget.spent() == 0
    budget.record()
    assert json.loads((tmp_path / LEDGER).read_text()) == {"run_id": "run-1", "restarts": 1}


def test_restarts_within_the_budget_leave_the_rest(tmp_path: Path) -> None:
    restarted: list[str] = []
    compose = RestartingCompose(restarted)
    RestartBudget(tmp_path, "run-1", limit=2).record()  # one spent before, elsewhere
    budget = RestartBudget(tmp_path, "run-1", limit=2)
    done, left = restart_within_budget(compose, ["vllm", "tensorrt"], budget, 60, "to free")
    assert (done, left, restarted) == (["vllm"], ["tensorrt"], ["vllm"])
    assert RestartBudget(tmp_path, "run-1", limit=2).spent() == 2


class RestartingCompose:
    """Restarts record the service; the fresh worker answers at once."""

    def __init__(self, restarted: list[str]) -> None:
        self.restarted = restarted

    def restart(self, service: str, wait_timeout: int) -> None:
        self.restarted.append(service)

    def cli(self, args: Sequence[str], env: Any = None, timeout: float | None = None) -> Completed:
        stats = {"pid": 7, "started_at": "now", "busy_with": None}
        return Completed(0, json.dumps(stats) + "\n", "")


def test_a_ledger_that_cannot_be_written_still_counts_the_tasks_restart(tmp_path: Path) -> None:
    missing = tmp_path / "gone"  # its directory does not exist: the write fails
    budget = RestartBudget(missing, "run-1", limit=1)
    budget.record()
    assert budget.made == 1
    assert budget.spent() == 1 and not budget.allowed()


class HealthCompose:
    """Answers `lem health --json` in the service with `answer` (or raises it)."""

    def __init__(self, answer: Completed | Exception) -> None:
        self.answer = answer
        self.asked: list[Sequence[str]] = []

    def cli(self, args: Sequence[str], **_: Any) -> Completed:  # only what health_problem asks
        self.asked.append(args)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def report(*outside: float | None) -> Completed:
    gpus = [{"index": i, "memory_outside_worker_pct": pct} for i, pct in enumerate(outside)]
    return Completed(0, json.dumps({"nvml": True, "gpus": gpus}) + "\n", "")


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (report(), None),  # no GPU (the CPU image): healthy
        (report(12.0, None), None),  # an unknown share is not a problem
        (report(90.0), None),  # at the threshold: not above it
        (report(3.0, 95.5), "GPU 1: 96 % of its memory held outside the worker (threshold 90 %)"),
        (Completed(1, "", 'service "pytorch" is not running\n'), "`lem health` failed: "),
        (Completed(137, "", ""), "`lem health` failed: exit status 137"),
        (Completed(0, "nvml init...\n", ""), "`lem health` answered no report: 'nvml init...'"),
        (FileNotFoundError(2, "No such file", "docker"), "`lem health` could not run"),
        (subprocess.TimeoutExpired("docker", 120), "`lem health` could not run"),
    ],
)
def test_the_health_rule(answer: Completed | Exception, problem: str | None) -> None:
    compose = HealthCompose(answer)
    found = health_problem(compose, "pytorch", 90.0)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
    assert compose.asked == [["exec", "--no-TTY", "pytorch", "lem", "health", "--json"]]
