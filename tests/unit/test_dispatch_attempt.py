"""The dispatch layer behind `lem_experiment`: one attempt's state machine, the restart
and timeout policy, and the gaps, against a recording stand-in for Docker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.clock import FakeClock
from fixtures.load import load_module
from fixtures.plan import experiment_args, manifest_entry
from fixtures.results import make_result, write_result

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.controller.plan import PlannedExperiment, build_plan
from llenergymeasure.dispatch.attempt import Outcome, run_attempt
from llenergymeasure.dispatch.compose import Completed, service_stopped
from llenergymeasure.dispatch.errors import ComposeError
from llenergymeasure.dispatch.gaps import wait_gap
from llenergymeasure.dispatch.restarts import RestartBudget
from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    load_manifest,
    save_manifest,
)

CAMPAIGN = "utest"
LIBRARY = Path(__file__).resolve().parents[2] / "library"
CONFIG = {
    "config_name": "a",
    "backend": "pytorch",
    "model": {"path": "/models/tiny"},
    "decoder": {"max_new_tokens": 4},
    "dataset": {"name": "builtin:short-prompts", "num_prompts": 2},
}


LEM_EXPERIMENT = load_module(LIBRARY / "lem_experiment.py", "lem_experiment")


class FakeCompose:
    """A recording `Compose`: each exec of `lem experiment` answers the next of `exec_rcs`
    and, on 0, writes the result the real one would."""

    def __init__(
        self, experiment: PlannedExperiment, state_dir: Path, exec_rcs: Sequence[int] = (0,)
    ):
        self.experiment = experiment
        self.state_dir = state_dir
        self.exec_rcs = list(exec_rcs)
        self.calls: list[tuple[Any, ...]] = []
        self.services = ["pytorch"]
        self.top = ""
        self.busy_with: str | None = None
        self.wait_cool: str | Exception = '{"reason": "cool", "waited_seconds": 4.5}'
        self.states: list[tuple[str, int | None]] = [("running", None)]
        # `lem health --json` in the service: its exit status and the GPUs' outside shares
        self.health_rc = 0
        self.health_outside: list[float] = []
        self.restart_error: ComposeError | None = None
        self.writes_result = True  # on exit 0, as the real exec does
        self.cli_error: OSError | None = None  # the docker CLI cannot run the exec

    def cli(
        self,
        args: Sequence[str],
        env: Any = None,
        timeout: float | None = None,
    ) -> Completed:
        self.calls.append(("cli", *args))
        if args[0] == "top":
            return Completed(0, self.top, "")
        if "worker" in args:
            stats = {"pid": 7, "started_at": "now", "busy_with": self.busy_with}
            return Completed(0, json.dumps(stats) + "\n", "")
        if "health" in args:
            gpus = [
                {"index": i, "memory_outside_worker_pct": pct}
                for i, pct in enumerate(self.health_outside)
            ]
            return Completed(self.health_rc, json.dumps({"gpus": gpus}), "service not running")
        if self.cli_error is not None:
            raise self.cli_error
        rc = self.exec_rcs.pop(0)
        if rc == 0 and self.writes_result:
            result = make_result(
                self.experiment.config_name,
                self.experiment.cycle,
                campaign_name=CAMPAIGN,
                config_hash=self.experiment.config_hash,
                energy_j=42.0,
            )
            write_result(self.state_dir / "results", result)
        return Completed(rc, "", f"some output\nerror {rc}\n")

    def config_services(self) -> list[str]:
        self.calls.append(("config",))
        return self.services

    def ps(self, service: str) -> list[tuple[str, int | None]]:
        self.calls.append(("ps", service))
        return self.states

    def restart(self, service: str, wait_timeout: int) -> None:
        self.calls.append(("restart", service))
        if self.restart_error is not None:
            raise self.restart_error

    def execute(self, service: str, argv: Sequence[str]) -> str:
        self.calls.append(("execute", service, *argv))
        if isinstance(self.wait_cool, Exception):
            raise self.wait_cool
        return self.wait_cool

    def kinds(self) -> list[str]:
        """What was asked, by kind: config, top, experiment, worker, health, restart, ps,
        execute."""
        kinds = []
        for call in self.calls:
            if call[0] != "cli":
                kinds.append(call[0])
            elif call[1] == "top":
                kinds.append("top")
            else:
                kinds.append(next((k for k in ("worker", "health") if k in call), "experiment"))
        return kinds


@pytest.fixture
def a1(tmp_path: Path) -> PlannedExperiment:
    campaign = tmp_path / "campaign.yml"
    body = {"campaign_name": CAMPAIGN, "configs": [CONFIG], "execution": {"cycles": 1}}
    campaign.write_text(yaml.safe_dump(body), encoding="utf-8")
    return build_plan(load_campaign(campaign), ["localhost"]).experiments[0]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def params(experiment: PlannedExperiment, state_dir: Path, **changes: Any) -> dict[str, Any]:
    """The module's parameters, defaults filled in as AnsibleModule does."""
    defaults = {k: v.get("default") for k, v in LEM_EXPERIMENT.ARGUMENT_SPEC.items()}
    compose_file = state_dir.parent / "compose.yml"
    return defaults | experiment_args(
        experiment, CAMPAIGN, state_dir, compose_file, "lem-utest", **changes
    )


def save(state_dir: Path, *entries: ManifestEntry) -> None:
    manifest = Manifest(
        campaign_name=CAMPAIGN, host="localhost", entries={e.exp_id: e for e in entries}
    )
    save_manifest(state_dir / "manifest.json", manifest)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def stored_entry(state_dir: Path, experiment: PlannedExperiment) -> ManifestEntry:
    return load_manifest(state_dir / "manifest.json").entries[experiment.exp_id]


def completed_before(experiment: PlannedExperiment, state_dir: Path) -> None:
    result = make_result(
        experiment.config_name,
        experiment.cycle,
        campaign_name=CAMPAIGN,
        config_hash=experiment.config_hash,
        energy_j=123.0,
    )
    write_result(state_dir / "results", result)
    path = f"results/{experiment.exp_id}/result.json"
    save(state_dir, manifest_entry(experiment, status="completed", attempts=1, result_path=path))


# -- the state machine ------------------------------------------------------------------


def test_a_new_experiment_runs_and_is_recorded_completed(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir)

    outcome = run_attempt(params(a1, state_dir), diff=True, compose=docker)

    assert not outcome.failed and outcome.changed
    got = outcome.returned
    assert (got["status"], got["reason"], got["attempts"]) == ("completed", "new", 1)
    assert got["metrics"]["energy_j"] == 42.0 and got["service_restarts"] == 0
    assert got["gap"] == {"mode": "fixed", "outcome": "none", "waited_seconds": 0.0}
    assert got["diff"]["before"] == {}
    assert got["diff"]["after"]["status"] == "completed"
    assert stored_entry(state_dir, a1).status == "completed"
    assert (state_dir / "configs" / f"{a1.exp_id}.json").is_file()
    assert docker.kinds() == ["config", "experiment"]
    argv = docker.calls[1]
    assert argv[1:4] == ("exec", "--no-TTY", "pytorch") and "--require-worker" in argv


def test_completed_with_the_same_hash_is_not_run_and_nothing_is_written(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    completed_before(a1, state_dir)
    before = tree(state_dir)
    docker = FakeCompose(a1, state_dir)

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert not outcome.changed and not outcome.failed
    assert (outcome.returned["status"], outcome.returned["reason"]) == ("completed", "completed")
    assert outcome.returned["metrics"]["energy_j"] == 123.0
    assert docker.calls == [] and tree(state_dir) == before


def test_completed_whose_result_is_gone_runs_again(a1: PlannedExperiment, state_dir: Path) -> None:
    completed_before(a1, state_dir)
    (state_dir / "results" / a1.exp_id / "result.json").unlink()

    outcome = run_attempt(params(a1, state_dir), compose=FakeCompose(a1, state_dir))

    assert outcome.returned["reason"] == "result-missing"
    assert outcome.returned["detail"].startswith("completed before, but no result at ")
    assert (outcome.returned["status"], outcome.returned["attempts"]) == ("completed", 2)


def test_an_interrupted_entry_runs_again_with_its_partial_output_moved_aside(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    save(state_dir, manifest_entry(a1, status="running", attempts=1, started_at="earlier"))
    partial = state_dir / "results" / a1.exp_id / "partial.txt"
    partial.parent.mkdir(parents=True)
    partial.write_text("half", encoding="utf-8")
    docker = FakeCompose(a1, state_dir)

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert (outcome.returned["reason"], outcome.returned["attempts"]) == ("interrupted", 2)
    aside = state_dir / "results" / f"{a1.exp_id}.interrupted-1" / "partial.txt"
    assert aside.read_text(encoding="utf-8") == "half"
    assert docker.kinds() == ["config", "top", "experiment"]  # waited for the earlier one


def test_an_interrupted_entry_that_top_cannot_check_fails_before_starting(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    save(state_dir, manifest_entry(a1, status="running", attempts=1))
    docker = FakeCompose(a1, state_dir)
    docker.cli = lambda args, env=None, timeout=None: Completed(1, "", "daemon gone")  # type: ignore[method-assign]

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert outcome.failed and not outcome.changed
    assert "docker compose top failed: daemon gone" in (outcome.msg or "")
    assert (outcome.returned["status"], outcome.returned["attempts"]) == ("running", 1)
    assert stored_entry(state_dir, a1).status == "running"


@pytest.mark.parametrize(("retry", "runs"), [(True, True), (False, False)])
def test_a_failed_experiment_runs_again_by_policy(
    a1: PlannedExperiment, state_dir: Path, retry: bool, runs: bool
) -> None:
    save(state_dir, manifest_entry(a1, status="failed", attempts=3, error="out of memory"))
    docker = FakeCompose(a1, state_dir)

    outcome = run_attempt(params(a1, state_dir, retry_failed=retry), compose=docker)

    got = outcome.returned
    if runs:
        assert (got["status"], got["reason"], got["attempts"]) == ("completed", "failed-retry", 4)
    else:
        assert not outcome.changed and not outcome.failed and docker.calls == []
        assert (got["status"], got["reason"], got["error"]) == (
            "failed",
            "failed-kept",
            "out of memory",
        )


def test_check_mode_reports_the_diff_and_writes_nothing(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    save(state_dir, manifest_entry(a1, status="failed", attempts=1, error="boom"))
    before = tree(state_dir)
    docker = FakeCompose(a1, state_dir)

    outcome = run_attempt(params(a1, state_dir), check_mode=True, diff=True, compose=docker)

    got = outcome.returned
    assert outcome.changed and (got["status"], got["attempts"]) == ("pending", 1)
    assert got["diff"]["before"]["status"] == "failed"
    assert got["diff"]["after"]["status"] == "running" and got["diff"]["after"]["attempts"] == 2
    assert docker.kinds() == ["config"] and tree(state_dir) == before  # no services cache either


def test_without_diff_mode_there_is_no_diff(a1: PlannedExperiment, state_dir: Path) -> None:
    outcome = run_attempt(
        params(a1, state_dir), check_mode=True, compose=FakeCompose(a1, state_dir)
    )

    assert "diff" not in outcome.returned


def test_an_unknown_service_fails_before_anything_is_written(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    outcome = run_attempt(params(a1, state_dir, service="vllm"), compose=FakeCompose(a1, state_dir))

    assert outcome.failed and "'vllm' is not a service of" in (outcome.msg or "")
    assert "services: pytorch" in (outcome.msg or "") and list(state_dir.iterdir()) == []


def test_the_services_are_read_once_for_unchanged_compose_files(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    (state_dir.parent / "compose.yml").write_text("services: {}\n", encoding="utf-8")
    first, second = FakeCompose(a1, state_dir), FakeCompose(a1, state_dir)
    run_attempt(params(a1, state_dir), compose=first)
    (state_dir / "manifest.json").unlink()

    run_attempt(params(a1, state_dir), compose=second)

    assert first.kinds()[0] == "config" and "config" not in second.kinds()


def test_a_failed_exec_is_recorded_failed_with_its_stderr(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    outcome = run_attempt(params(a1, state_dir), diff=True, compose=FakeCompose(a1, state_dir, [1]))

    got = outcome.returned
    assert outcome.failed and outcome.changed and outcome.msg == f"{a1.exp_id}: error 1"
    assert (got["status"], got["error"], got["rc"]) == ("failed", "error 1", 1)
    assert (
        got["stderr_tail"] == "some output\nerror 1" and got["diff"]["after"]["status"] == "failed"
    )
    assert stored_entry(state_dir, a1).error == "error 1"


def test_a_stopped_service_is_named_in_the_failure(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir, [1])
    docker.states = [("exited", 137)]

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert (
        "stopped during the experiment (its container is exited with exit code 137 (killed))"
        in (outcome.returned["error"])
    )


class SettlingCompose:
    """`docker compose ps` that says "running" `running_for` more times, then "exited"."""

    def __init__(self, running_for: int) -> None:
        self.running_for = running_for
        self.asked = 0

    def ps(self, service: str) -> list[tuple[str, int | None]]:
        self.asked += 1
        return [("running", None)] if self.asked <= self.running_for else [("exited", 137)]


def test_a_killed_exec_waits_for_its_container_to_be_marked_exited() -> None:
    """The exec ends (137) as the container dies, before Docker marks it exited."""
    clock = FakeClock()
    docker = SettlingCompose(running_for=3)

    why = service_stopped(docker, "pytorch", exec_rc=137, clock=clock, sleep=clock.sleep)

    assert why == "its container is exited with exit code 137 (killed)"
    assert (docker.asked, clock.sleeps) == (4, [0.5, 0.5, 0.5])


def test_a_running_service_is_asked_once_unless_the_exec_was_killed() -> None:
    clock = FakeClock()
    failed, killed = SettlingCompose(running_for=100), SettlingCompose(running_for=100)

    assert service_stopped(failed, "pytorch", exec_rc=1, clock=clock, sleep=clock.sleep) is None
    assert failed.asked == 1 and clock.sleeps == []
    assert service_stopped(killed, "pytorch", exec_rc=137, clock=clock, sleep=clock.sleep) is None
    assert clock.now >= 5.0 and killed.asked == len(clock.sleeps) + 1


def test_an_invalid_identity_fails_with_every_key_always_returned(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    outcome = run_attempt(
        params(a1, state_dir, config_hash="0" * 16), compose=FakeCompose(a1, state_dir)
    )

    assert outcome.failed and (outcome.msg or "").startswith("config_hash: '0000000000000000'")
    assert always_returned() <= set(outcome.returned)


# -- restart on 75, timeouts ------------------------------------------------------------


def test_exit_75_restarts_the_service_once_and_runs_again(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [75, 0])

    outcome = run_attempt(params(a1, state_dir, cold_start=True), compose=docker)

    assert outcome.returned["status"] == "completed" and outcome.returned["service_restarts"] == 1
    # ps: after a failed exec, whether the service still runs; worker: the fresh one answers
    assert docker.kinds() == ["config", "experiment", "ps", "restart", "worker", "experiment"]
    assert "--cold-start" in docker.calls[1]


def test_exit_75_without_a_restart_left_fails(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir, [75])

    outcome = run_attempt(params(a1, state_dir, max_restarts=0), compose=docker)

    assert outcome.returned["error"] == (
        "error 75 (no service restart left: health_check.max_restarts is spent)"
    )
    assert "restart" not in docker.kinds() and outcome.returned["service_restarts"] == 0


def test_exit_75_after_the_restart_too_fails(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir, [75, 75])

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert outcome.returned["error"] == "error 75 (even after a restart of the service)"
    assert outcome.returned["service_restarts"] == 1
    assert "health" not in docker.kinds()  # restarted just now: no check after the failure


def test_a_timed_out_exec_is_cancelled_in_the_worker(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [124])

    outcome = run_attempt(params(a1, state_dir, timeout=5), compose=docker)

    assert outcome.returned["error"] == "timed out after 5 s: stopped in the worker"
    assert (
        "cli",
        "exec",
        "--no-TTY",
        "pytorch",
        "lem",
        "worker",
        "--status",
        "--cancel",
        a1.exp_id,
    ) in (docker.calls)
    assert docker.calls[1][4:7] == ("timeout", "--kill-after=30", "5")


# -- health checks and the run's restart budget ----------------------------------------


def test_a_failure_whose_service_died_restarts_it_for_the_next_experiment(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [1])
    docker.health_rc = 1  # the exec cannot reach the service

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert docker.kinds() == ["config", "experiment", "ps", "health", "restart", "worker"]
    got = outcome.returned
    assert (got["status"], got["service_restarts"]) == ("failed", 1)
    assert got["health"] == [
        {
            "when": "after the failure",
            "problem": "`lem health` failed: service not running",
            "restarted": True,
        }
    ]


def test_a_failure_on_a_healthy_service_leaves_it_as_it_is(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [1])
    docker.health_outside = [40.0]

    outcome = run_attempt(params(a1, state_dir), compose=docker)

    assert "restart" not in docker.kinds() and outcome.returned["service_restarts"] == 0
    assert outcome.returned["health"] == [
        {"when": "after the failure", "problem": None, "restarted": False}
    ]


def test_without_after_failure_checks_a_failure_asks_nothing_more(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [1])

    run_attempt(params(a1, state_dir, health_check_after_failure=False), compose=docker)

    assert docker.kinds() == ["config", "experiment", "ps"]


def test_memory_held_outside_the_worker_restarts_before_the_experiment(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [0])
    docker.health_outside = [2.0, 95.0]

    outcome = run_attempt(params(a1, state_dir, health_check_before=True), compose=docker)

    assert docker.kinds() == ["config", "health", "restart", "worker", "experiment"]
    assert outcome.returned["status"] == "completed"
    assert outcome.returned["health"][0]["problem"] == (
        "GPU 1: 95 % of its memory held outside the worker (threshold 90 %)"
    )


def test_a_failed_restart_before_the_experiment_fails_the_task_and_starts_nothing(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [0])
    docker.health_rc = 1
    docker.restart_error = ComposeError("Cannot connect to the Docker daemon", 1)

    outcome = run_attempt(params(a1, state_dir, health_check_before=True), compose=docker)

    assert outcome.failed and (outcome.msg or "").startswith(f"{a1.exp_id} not started: ")
    assert "Cannot connect to the Docker daemon" in (outcome.msg or "")
    assert "experiment" not in docker.kinds()
    assert not (state_dir / "manifest.json").exists()  # still pending: a re-run runs it


def test_a_spent_budget_runs_on_with_a_warning(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir, [0])
    docker.health_rc = 1

    for _ in range(3):  # the run's three restarts, made elsewhere on the host
        RestartBudget(state_dir, "run-1", limit=3).record()
    outcome = run_attempt(
        params(a1, state_dir, health_check_before=True, run_id="run-1", max_restarts=3),
        compose=docker,
    )

    assert "restart" not in docker.kinds() and outcome.returned["status"] == "completed"
    assert outcome.warnings == [
        "service 'pytorch' failed its health check before the experiment (`lem health` "
        "failed: service not running), but health_check.max_restarts (3) restarts were made "
        "in this run already: going on without a restart"
    ]


def test_a_loops_tasks_spend_one_budget(a1: PlannedExperiment, tmp_path: Path) -> None:
    """Two tasks of one run, each failing on a dead service, with one restart left in
    the run: the first restarts it, the second may not."""
    state_dir = tmp_path / "state"  # the host's: the ledger is in it
    state_dir.mkdir()
    RestartBudget(state_dir, "run-1", limit=3).record()
    RestartBudget(state_dir, "run-1", limit=3).record()
    restarts = []
    for _ in ("first", "second"):
        (state_dir / "manifest.json").unlink(missing_ok=True)  # a new experiment each time
        docker = FakeCompose(a1, state_dir, [1])
        docker.health_rc = 1
        run_attempt(params(a1, state_dir, run_id="run-1", max_restarts=3), compose=docker)
        restarts.append(docker.kinds().count("restart"))

    assert restarts == [1, 0]


def test_the_budget_is_spent_across_two_segments(a1: PlannedExperiment, tmp_path: Path) -> None:
    """Segment 1's pre-check restart fails: the task fails, returns that restart, and
    segment 2 (another loop of the same run) finds the budget (1) spent."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    first = FakeCompose(a1, state_dir, [0])
    first.health_rc = 1
    first.restart_error = ComposeError("Cannot connect to the Docker daemon", 1)
    segment_1 = run_attempt(
        params(a1, state_dir, health_check_before=True, run_id="run-1", max_restarts=1),
        compose=first,
    )
    assert segment_1.failed and segment_1.returned["service_restarts"] == 1
    assert segment_1.returned["health"] == []  # the check that restarted raised

    second = FakeCompose(a1, state_dir, [0])
    second.health_rc = 1
    segment_2 = run_attempt(
        params(a1, state_dir, health_check_before=True, run_id="run-1", max_restarts=1),
        compose=second,
    )
    assert "restart" not in second.kinds() and segment_2.returned["status"] == "completed"
    assert segment_2.returned["service_restarts"] == 0
    assert "restarts were made in this run already" in segment_2.warnings[0]


# -- gaps -------------------------------------------------------------------------------


def gap(
    docker: FakeCompose, p: dict[str, Any], warnings: list[str] | None = None
) -> tuple[Any, FakeClock]:
    clock = FakeClock()
    waited = wait_gap(
        docker, p, (warnings if warnings is not None else []).append, clock.sleep, clock
    )
    return waited, clock


def test_no_gap_waits_nothing(a1: PlannedExperiment, state_dir: Path) -> None:
    waited, clock = gap(FakeCompose(a1, state_dir), params(a1, state_dir, gap_mode="thermal"))

    assert (waited.outcome, waited.waited_seconds, clock.sleeps) == ("none", 0.0, [])


def test_a_fixed_gap_sleeps(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir)
    waited, clock = gap(docker, params(a1, state_dir, gap_seconds=30.0))

    assert (waited.mode, waited.outcome, waited.waited_seconds) == ("fixed", "fixed", 30.0)
    assert clock.sleeps == [30.0] and docker.calls == []


def test_a_thermal_gap_is_what_wait_cool_answered(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir)
    p = params(a1, state_dir, gap_seconds=60.0, gap_mode="thermal")
    waited, clock = gap(docker, p)

    assert (waited.outcome, waited.waited_seconds, clock.sleeps) == ("cool", 4.5, [])
    assert docker.calls[0][:5] == ("execute", "pytorch", "lem", "wait-cool", "--max-seconds")
    assert "/lem/state/baseline.json" in docker.calls[0]


@pytest.mark.parametrize(
    ("answer", "outcome", "warned"),
    [
        ('{"reason": "no-baseline", "waited_seconds": 0}', "no-baseline", False),
        ("not json", "wait-cool-failed", True),
        (ComposeError("exec failed", 1), "wait-cool-failed", True),
    ],
)
def test_a_thermal_gap_that_cannot_tell_is_waited_as_fixed(
    a1: PlannedExperiment, state_dir: Path, answer: Any, outcome: str, warned: bool
) -> None:
    docker = FakeCompose(a1, state_dir)
    docker.wait_cool = answer
    warnings: list[str] = []
    waited, clock = gap(
        docker, params(a1, state_dir, gap_seconds=60.0, gap_mode="thermal"), warnings
    )

    assert (waited.outcome, waited.waited_seconds, clock.sleeps) == (outcome, 60.0, [60.0])
    assert bool(warnings) is warned


# -- what the module documents ----------------------------------------------------------


def documented() -> dict[str, Any]:
    return yaml.safe_load(LEM_EXPERIMENT.RETURN)


def always_returned() -> set[str]:
    return {key for key, doc in documented().items() if doc["returned"] == "always"}


def test_return_documents_exactly_the_keys_outcomes_have(
    a1: PlannedExperiment, state_dir: Path, tmp_path: Path
) -> None:
    outcomes: list[Outcome] = []
    for rcs, changes in (([0], {}), ([1], {}), ([0], {"config_hash": "0" * 16})):
        directory = tmp_path / f"s{len(outcomes)}"
        directory.mkdir()
        outcomes.append(
            run_attempt(
                params(a1, directory, **changes), diff=True, compose=FakeCompose(a1, directory, rcs)
            )
        )
    keys = set().union(*(o.returned for o in outcomes)) - {"diff"}  # diff: Ansible's own

    assert keys == set(documented())
    for outcome in outcomes:
        assert always_returned() <= set(outcome.returned)


# -- what each outcome path returns, against RETURN ----------------------------------------

PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "dict": (dict,),
    "list": (list,),
}


def check_against_return(outcome: Outcome) -> None:
    """Every key documented, of its documented type; those RETURN promises are there."""
    docs, got = documented(), outcome.returned
    for key, value in got.items():
        if key == "diff":  # Ansible's own
            continue
        assert key in docs, f"{key} is returned but not in RETURN"
        expected = PYTHON_TYPES[docs[key]["type"]]
        is_bool_for_int = isinstance(value, bool) and docs[key]["type"] != "bool"
        assert isinstance(value, expected) and not is_bool_for_int, (key, value)
    assert always_returned() <= set(got)
    if got["status"] == "failed":
        assert "error" in got
    if got["status"] == "completed":
        assert {"result_path", "metrics"} <= set(got)
    else:
        assert "result_path" not in got


def failed_entry(a1: PlannedExperiment, state_dir: Path) -> None:
    save(state_dir, manifest_entry(a1, status="failed", attempts=1, error="boom"))


def test_return_of_a_completed_experiment(a1: PlannedExperiment, state_dir: Path) -> None:
    outcome = run_attempt(params(a1, state_dir), compose=FakeCompose(a1, state_dir))
    check_against_return(outcome)
    assert outcome.changed and "service_restarts" in outcome.returned


def test_return_of_one_completed_before(a1: PlannedExperiment, state_dir: Path) -> None:
    completed_before(a1, state_dir)
    outcome = run_attempt(params(a1, state_dir), compose=FakeCompose(a1, state_dir))
    check_against_return(outcome)
    assert not outcome.changed and outcome.returned["reason"] == "completed"


def test_return_of_a_failure_kept(a1: PlannedExperiment, state_dir: Path) -> None:
    failed_entry(a1, state_dir)
    outcome = run_attempt(
        params(a1, state_dir, retry_failed=False), compose=FakeCompose(a1, state_dir)
    )
    check_against_return(outcome)
    assert (outcome.returned["status"], outcome.returned["error"]) == ("failed", "boom")


def test_return_of_a_failed_exec_has_its_rc(a1: PlannedExperiment, state_dir: Path) -> None:
    outcome = run_attempt(params(a1, state_dir), compose=FakeCompose(a1, state_dir, [1]))
    check_against_return(outcome)
    assert outcome.returned["rc"] == 1


def test_return_of_an_exec_that_exited_0_without_a_usable_result(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir, [0])
    docker.writes_result = False
    outcome = run_attempt(params(a1, state_dir), compose=docker)
    check_against_return(outcome)
    assert (outcome.returned["status"], outcome.returned["rc"]) == ("failed", 0)


def test_return_when_the_docker_cli_cannot_run(a1: PlannedExperiment, state_dir: Path) -> None:
    docker = FakeCompose(a1, state_dir)
    docker.cli_error = FileNotFoundError(2, "No such file or directory")
    outcome = run_attempt(params(a1, state_dir, health_check_after_failure=False), compose=docker)
    check_against_return(outcome)
    assert outcome.returned["status"] == "failed" and "rc" not in outcome.returned


def test_return_of_an_invalid_argument(a1: PlannedExperiment, state_dir: Path) -> None:
    outcome = run_attempt(
        params(a1, state_dir, config_hash="0" * 16), compose=FakeCompose(a1, state_dir)
    )
    check_against_return(outcome)
    assert outcome.failed and not outcome.changed


def test_return_of_an_early_failure_on_an_entry_that_had_failed(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    failed_entry(a1, state_dir)
    docker = FakeCompose(a1, state_dir)
    docker.services = ["another"]  # the task fails on the service, after reading the entry
    outcome = run_attempt(params(a1, state_dir), compose=docker)
    check_against_return(outcome)
    assert outcome.failed and outcome.returned["error"] == "boom"


def test_return_of_a_failed_restart_before_the_experiment(
    a1: PlannedExperiment, state_dir: Path
) -> None:
    docker = FakeCompose(a1, state_dir)
    docker.health_rc = 1
    docker.restart_error = ComposeError("Cannot connect to the Docker daemon", 1)
    outcome = run_attempt(params(a1, state_dir, health_check_before=True), compose=docker)
    check_against_return(outcome)
    assert outcome.failed and outcome.returned["service_restarts"] == 1


def test_return_of_a_partial_start(a1: PlannedExperiment, state_dir: Path) -> None:
    (state_dir / "configs").write_text("", encoding="utf-8")  # the config cannot be written
    outcome = run_attempt(params(a1, state_dir), compose=FakeCompose(a1, state_dir))
    check_against_return(outcome)
    assert outcome.failed and outcome.changed
    assert (outcome.returned["status"], outcome.returned["attempts"]) == ("running", 1)
    assert stored_entry(state_dir, a1).status == "running"


def test_return_in_check_mode(a1: PlannedExperiment, state_dir: Path) -> None:
    failed_entry(a1, state_dir)
    outcome = run_attempt(
        params(a1, state_dir), check_mode=True, compose=FakeCompose(a1, state_dir)
    )
    check_against_return(outcome)
    assert outcome.returned["status"] == "pending" and "error" not in outcome.returned
