"""One exec of `lem experiment` in a running service, with its restart and timeout policy.

The exec is a thin client of the service's `lem worker`. Exit 75 means only a restart
of the service gives the cold start asked for: restarted once, if allowed. Past the
timeout the worker is asked to stop the experiment, or the service restarts
(`timeouts.stop_timed_out`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llenergymeasure.dispatch.compose import (
    Compose,
    service_stopped,
    worker_stats,
)
from llenergymeasure.dispatch.errors import ExperimentFailed, NeedsRestart, TimedOut, last_line
from llenergymeasure.dispatch.restarts import RestartBudget, health_problem, restart_counted
from llenergymeasure.dispatch.timeouts import CANCEL_GRACE_SECONDS, stop_timed_out

TIMEOUT_EXIT_CODE = 124  # coreutils `timeout` exit status when the limit was hit
TIMEOUT_KILL_AFTER_SECONDS = 30  # after TERM, time to exit cleanly before KILL
NEEDS_RESTART_EXIT_CODE = 75  # `lem experiment`: only a service restart makes this cold start


def experiment_argv(params: Mapping[str, Any], gap_waited: float) -> list[str]:
    """The in-container command line of docs/architecture.md, as an argument list."""
    root = params["container_state_dir"].rstrip("/")
    name = params["exp_id"]
    argv = [
        "lem",
        "experiment",
        f"{root}/configs/{name}.json",
        "--out",
        f"{root}/results/{name}",
        "--exp-id",
        name,
        "--config-hash",
        params["config_hash"],
        "--cycle",
        str(params["cycle"]),
        "--campaign",
        params["campaign_name"],
        "--host",
        params["host"],
        "--gap-waited",
        f"{gap_waited:.3f}",
    ]
    if params.get("gpu_knobs"):  # what lem_gpu_knobs set, recorded in the result
        argv += ["--gpu-knobs", json.dumps(params["gpu_knobs"], sort_keys=True)]
    argv.append("--require-worker")  # never a cold in-process run inside a warm campaign
    if params["cold_start"]:
        argv.append("--cold-start")
    if params["timeout"]:
        limit = ["timeout", f"--kill-after={TIMEOUT_KILL_AFTER_SECONDS}", str(params["timeout"])]
        return limit + argv
    return argv


def execute(compose: Compose, params: Mapping[str, Any], gap_waited: float) -> None:
    """`docker compose exec --no-TTY SERVICE lem experiment ...`; ExperimentFailed on error,
    NeedsRestart when only a restart of the service can make the cold start asked for,
    TimedOut when `timeout` stopped the exec.

    Not python-on-whales' `compose.execute(envs=...)`, which puts each variable's value on
    the docker CLI's command line (visible in `ps`): here only the names are there, and
    the values reach the CLI through its environment.
    """
    environment = {str(name): str(value) for name, value in params["environment"].items()}
    env_names = [arg for name in sorted(environment) for arg in ("--env", name)]
    args = ["exec", "--no-TTY", *env_names, params["service"]]
    try:
        completed = compose.cli([*args, *experiment_argv(params, gap_waited)], env=environment)
    except OSError as exc:
        raise ExperimentFailed(f"cannot run the docker CLI: {exc.strerror or exc}") from None
    if completed.rc == 0:
        return
    rc, stderr = completed.rc, completed.stderr
    timed_out = rc == TIMEOUT_EXIT_CODE and bool(params["timeout"])
    if timed_out:
        cause = f"timed out after {params['timeout']} s"
    else:
        cause = last_line(stderr) or f"lem experiment exited with status {rc}"
    stopped = service_stopped(compose, params["service"], exec_rc=rc)
    if stopped:
        cause = f"service {params['service']!r} stopped during the experiment ({stopped}): {cause}"
        raise ExperimentFailed(cause, rc, stderr)  # nothing of it runs any more
    if timed_out:
        raise TimedOut(cause, rc, stderr)
    failure = NeedsRestart if rc == NEEDS_RESTART_EXIT_CODE else ExperimentFailed
    raise failure(cause, rc, stderr)


@dataclass
class ServiceExec:
    """The execs of one attempt in its service, and the restarts it makes (`budget.made`)."""

    compose: Compose
    params: Mapping[str, Any]
    budget: RestartBudget

    def restart(self, why: str) -> None:
        p = self.params
        restart_counted(self.compose, p["service"], self.budget, p["wait_timeout"], why)

    def check_health(self, when: str) -> dict[str, Any]:
        """`lem health` in the service; restarted when unhealthy and the budget allows.

        What was found, for the task's return; ExperimentFailed when the restart fails.
        """
        p = self.params
        problem = health_problem(self.compose, p["service"], p["gpu_memory_threshold_pct"])
        report: dict[str, Any] = {"when": when, "problem": problem, "restarted": False}
        if problem is not None and self.budget.allowed():
            self.restart(f"after its health check {when} ({problem})")
            report["restarted"] = True
        return report


def execute_with_restart(run: ServiceExec, gap_waited: float) -> None:
    """Execute; when the worker answers that only a restart gives the cold start asked
    for (exit 75), restart the service once, if allowed, and execute again. Past the
    timeout, the experiment is stopped in the worker too (`stop_in_worker`)."""
    try:
        try:
            execute(run.compose, run.params, gap_waited)
            return
        except NeedsRestart as exc:
            if not run.budget.allowed():
                raise ExperimentFailed(
                    f"{exc.cause} (no service restart left: health_check.max_restarts is spent)",
                    exc.rc,
                ) from None
        run.restart("for a cold start")
        try:
            execute(run.compose, run.params, gap_waited)
        except NeedsRestart as exc:
            raise ExperimentFailed(
                f"{exc.cause} (even after a restart of the service)", exc.rc
            ) from None
    except TimedOut as exc:
        stop_in_worker(run, exc)


def stop_in_worker(run: ServiceExec, timed_out: TimedOut) -> None:
    """After the exec timed out: have the worker stop the experiment, or restart the
    service when the worker is frozen or does not stop it; raises ExperimentFailed."""
    service = run.params["service"]
    outcome = stop_timed_out(
        run.params["exp_id"],
        lambda cancel: worker_stats(run.compose, service, cancel),
        grace_seconds=run.params.get("cancel_grace", CANCEL_GRACE_SECONDS),
    )
    cause = f"{timed_out.cause}: {outcome.detail}"
    if outcome.restart and not run.budget.allowed():
        cause += f"; service {service!r} not restarted: health_check.max_restarts is spent"
    elif outcome.restart:
        try:
            run.restart("after a timed-out experiment")
        except ExperimentFailed as exc:
            raise ExperimentFailed(f"{cause}; {exc.cause}", exc.rc, exc.stderr_tail) from None
        cause += f"; service {service!r} restarted"
    raise ExperimentFailed(cause, timed_out.rc, timed_out.stderr_tail)
