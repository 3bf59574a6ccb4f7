"""One experiment's attempt on its host: settle an earlier one, start, run, finish.

The state machine of the `lem_experiment` module, without Ansible: `run_attempt` returns
an `Outcome` (what the task returns, and the failure message if it failed) that the
module turns into `exit_json`/`fail_json`. Check mode and diff are plain data here.

Each manifest update is made only while the entry is still the one this attempt read
(`manifest.replace_entry`), so an older attempt never overwrites a newer one's entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llenergymeasure.contracts.headline import headline_metrics
from llenergymeasure.contracts.identity import config_hash_of, exp_id, safe_name_problem
from llenergymeasure.dispatch.compose import (
    Compose,
    DockerCompose,
    attempt_pids_in,
    check_service,
)
from llenergymeasure.dispatch.errors import ExperimentFailed
from llenergymeasure.dispatch.execute import (
    TIMEOUT_KILL_AFTER_SECONDS,
    ServiceExec,
    execute_with_restart,
)
from llenergymeasure.dispatch.gaps import Gap, wait_gap
from llenergymeasure.dispatch.restarts import RestartBudget
from llenergymeasure.dispatch.result_file import UnusableResult, read_result
from llenergymeasure.errors import LemError
from llenergymeasure.files import atomic_write_text
from llenergymeasure.host.attempts import wait_for_attempts_to_end
from llenergymeasure.host.manifest import (
    ManifestEntry,
    decide,
    load_manifest,
    move_aside,
    replace_entry,
)

# How long an earlier attempt left running by a killed controller is waited for, when
# the experiments have no timeout of their own.
EARLIER_ATTEMPT_WAIT_SECONDS = 3600
SERVICES_CACHE = ".compose-services.json"  # in state_dir; see lem_experiment's notes
IDENTITY = ("exp_id", "config_name", "cycle", "host")
_MINIMUMS = (
    ("cycle", 1),
    ("gap_seconds", 0),
    ("timeout", 1),
    ("wait_timeout", 1),
    ("max_restarts", 0),
    ("thermal_temp_tolerance_c", 0),
    ("thermal_power_tolerance_pct", 0),
)


@dataclass
class Outcome:
    """What the task returns; `msg` is set when the task failed."""

    changed: bool
    returned: dict[str, Any]
    msg: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.msg is not None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def entry_dict(entry: ManifestEntry | None) -> dict[str, Any]:
    return asdict(entry) if entry is not None else {}


def checked_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's resolved config, as plain JSON; names, limits and the plan's fields checked.

    The controller validated the config when it planned (lem_plan), and the container's
    `lem experiment` validates the file it is given; here the plan's exp_id, name,
    backend and hash must agree with the config, or results of different configs
    would mix under one id.
    """
    if safe_name_problem(params["campaign_name"]) is not None:
        raise LemError(
            f"campaign_name: {params['campaign_name']!r} is not a safe name "
            "(letters, digits, '.', '_', '-'; no '..')"
        )
    for key, minimum in _MINIMUMS:
        if params[key] is not None and params[key] < minimum:
            raise LemError(f"{key}: {params[key]} is less than the minimum {minimum}")
    config = params["config"]
    if not isinstance(config, dict) or not isinstance(config.get("config_name"), str):
        raise LemError(f"config: not a resolved config from the plan: {str(config)[:200]!r}")
    expected = {
        "config_name": config["config_name"],
        "backend": config.get("backend"),
        "exp_id": exp_id(params["campaign_name"], config["config_name"], params["cycle"]),
        "config_hash": config_hash_of(config),
    }
    for key, value in expected.items():
        if params[key] != value:
            raise LemError(f"{key}: {params[key]!r} does not match the config (expected {value!r})")
    return config


def completed_fields(entry: ManifestEntry, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": entry.status,
        "attempts": entry.attempts,
        "result_path": entry.result_path,
        "metrics": headline_metrics(result),
    }


class Attempt:
    """One attempt of one experiment: the module's parameters, paths, and what to return."""

    def __init__(
        self,
        params: Mapping[str, Any],
        check_mode: bool,
        diff: bool,
        compose: Compose | None = None,
    ) -> None:
        self.params = params
        self.check_mode = check_mode
        self.diff = diff
        self.exp_id: str = params["exp_id"]
        self.state_dir = Path(params["state_dir"])
        self.manifest_path = self.state_dir / "manifest.json"
        self.result_path = f"results/{self.exp_id}/result.json"  # relative to state_dir
        self.compose = compose or DockerCompose(params["compose_files"], params["project_name"])
        self.warnings: list[str] = []
        self.health: list[dict[str, Any]] = []  # the health checks made, as returned
        self.service: ServiceExec | None = None  # once the service is used
        self.changed = False  # once the manifest was written
        # Every key RETURN documents as always returned, also when the task fails early.
        self.returned: dict[str, Any] = {key: params[key] for key in IDENTITY} | {
            "status": "pending",
            "reason": "",
            "detail": "",
            "attempts": 0,
        }

    def outcome(self, changed: bool, msg: str | None = None, **fields: Any) -> Outcome:
        returned = self.returned | fields
        if returned["status"] != "failed":  # an earlier failure's error, run again since
            returned.pop("error", None)
        return Outcome(changed, returned, msg, self.warnings)

    def early_failure(self, msg: str) -> Outcome:
        """The task failed before the experiment was settled: what is known so far, the
        restarts made and the health checks included, and changed when the manifest was."""
        made = {}
        if self.service is not None:
            made = {"service_restarts": self.service.budget.made, "health": self.health}
        return self.outcome(self.changed, msg, **made)

    def diff_of(self, before: ManifestEntry | None, after: ManifestEntry) -> dict[str, Any]:
        """The manifest entry before and after, in diff mode only."""
        if not self.diff:
            return {}
        return {"diff": {"before": entry_dict(before), "after": entry_dict(after)}}

    def load(self) -> ManifestEntry | None:
        previous = load_manifest(self.manifest_path).entries.get(self.exp_id)
        if previous is not None:  # what a failure returns: the entry as it stands
            self.returned |= {"status": previous.status, "attempts": previous.attempts}
            if previous.status == "failed":
                self.returned["error"] = previous.error or ""
        return previous

    def replace(self, expected: ManifestEntry | None, entry: ManifestEntry) -> None:
        """Record `entry` while the manifest still holds `expected` (ManifestConflict if not)."""
        p = self.params
        replace_entry(self.manifest_path, p["campaign_name"], p["host"], expected, entry)

    def read_result(self) -> dict[str, Any]:
        path = self.state_dir / self.result_path
        return read_result(path, self.exp_id, self.params["config_hash"])

    def result_of_run(self) -> dict[str, Any]:
        """The result the exec wrote; ExperimentFailed (recorded failed) when unusable."""
        try:
            return self.read_result()
        except UnusableResult as exc:
            raise ExperimentFailed(str(exc), rc=0) from None  # the exec exited 0

    def run(self) -> Outcome:
        config = checked_config(self.params)
        previous = self.load()
        if settled := self.settled(previous):
            return settled
        cache = None if self.check_mode else self.state_dir / SERVICES_CACHE
        check_service(self.compose, self.params, cache)
        started = self.started_entry(previous)
        if self.check_mode:
            return self.outcome(
                True,
                status="pending",
                attempts=started.attempts - 1,
                **self.diff_of(previous, started),
            )
        previous = self.settle_earlier_attempt(previous)
        if isinstance(previous, Outcome):
            return previous
        started = self.started_entry(previous)
        run = self.service = self.service_exec()
        if self.params["health_check_before"]:
            self.check_health_before(run)
        gap = wait_gap(self.compose, self.params, self.warnings.append)
        self.start(previous, started, config)
        return self.finish(previous, started, gap, run)

    def service_exec(self) -> ServiceExec:
        p = self.params
        budget = RestartBudget(self.state_dir, p["run_id"], p["max_restarts"])
        return ServiceExec(self.compose, p, budget)

    def check_health_before(self, run: ServiceExec) -> None:
        """The service checked (and restarted when unhealthy) before the entry is marked
        running; when the restart fails, the task fails and the experiment is left as it was."""
        try:
            self.health.append(self.checked(run, "before the experiment"))
        except ExperimentFailed as exc:
            raise LemError(f"{self.exp_id} not started: {exc.cause}") from None

    def settled(self, previous: ManifestEntry | None) -> Outcome | None:
        """The outcome (changed=false) when the manifest says there is nothing to run.

        Sets the reason to run otherwise; a completed experiment whose result file
        cannot be read runs again (`result-missing`), since the work is not really done.
        """
        decision = decide(previous, self.params["config_hash"], self.params["retry_failed"])
        self.returned |= {"reason": decision.reason, "detail": decision.detail}
        if previous is None or decision.run:
            return None
        if decision.reason != "completed":  # a failure kept by policy
            return self.outcome(False)  # status, attempts and error as load() found them
        try:
            result = self.read_result()
        except UnusableResult as exc:
            self.returned |= {
                "reason": "result-missing",
                "detail": f"completed before, but {exc}: running again",
            }
            return None
        return self.outcome(False, **completed_fields(previous, result))

    def started_entry(self, previous: ManifestEntry | None) -> ManifestEntry:
        """The manifest entry of an attempt that starts now."""
        p = self.params
        return ManifestEntry(
            exp_id=self.exp_id,
            config_name=p["config_name"],
            config_hash=p["config_hash"],
            backend=p["backend"],
            service=p["service"],
            cycle=p["cycle"],
            status="running",
            attempts=(previous.attempts if previous is not None else 0) + 1,
            started_at=utc_now(),
        )

    def settle_earlier_attempt(
        self, previous: ManifestEntry | None
    ) -> ManifestEntry | Outcome | None:
        """After an interrupted attempt, wait for it to end in the service, then decide again.

        The `lem experiment` exec'd by a controller that was killed keeps running in the
        container and writes its result when it ends: measuring beside it would share
        the machine, and it could write into this attempt's results directory. Its
        module, when it survived too, may record it completed meanwhile: then there is
        nothing to run (the settled Outcome is returned).
        """
        if previous is None or previous.status != "running":
            return previous
        service = self.params["service"]
        limit = (
            self.params["timeout"] or EARLIER_ATTEMPT_WAIT_SECONDS
        ) + TIMEOUT_KILL_AFTER_SECONDS
        still_running = wait_for_attempts_to_end(
            lambda: attempt_pids_in(self.compose, service, self.exp_id), limit
        )
        if still_running:
            raise LemError(
                f"{self.exp_id}: an earlier attempt still runs in service {service!r} "
                f"(host pids {', '.join(map(str, still_running))}) after {limit} s: stop it, "
                "then run the campaign again"
            )
        previous = self.load()
        return self.settled(previous) or previous

    def start(
        self, previous: ManifestEntry | None, started: ManifestEntry, config: dict[str, Any]
    ) -> None:
        """Mark running, set earlier output aside, write the config file (after the gap).

        Marked first, and only while the entry is still `previous`: a newer attempt never
        has its output moved or its entry replaced by an older one.
        """
        self.replace(previous, started)
        self.changed = True
        self.returned |= {"status": started.status, "attempts": started.attempts}
        if previous is not None:
            move_aside(self.state_dir / "results", self.exp_id)
        config_file = self.state_dir / "configs" / f"{self.exp_id}.json"
        try:
            config_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(config_file, json.dumps(config, indent=2) + "\n")
        except OSError as exc:
            raise LemError(f"{config_file}: cannot write config: {exc.strerror or exc}") from None

    def finish(
        self, previous: ManifestEntry | None, started: ManifestEntry, gap: Gap, run: ServiceExec
    ) -> Outcome:
        """Execute, then record the experiment completed or failed.

        A failure may mean that the service itself died: its health is checked then (unless
        this attempt restarted it already) and it is restarted, within the run's budget, so
        that the next experiment finds it up again.
        """
        self.returned["gap"] = asdict(gap)
        try:
            execute_with_restart(run, gap.waited_seconds)
            result = self.result_of_run()
        except ExperimentFailed as exc:
            cause = exc.cause
            if self.params["health_check_after_failure"] and not run.budget.made:
                try:
                    self.health.append(self.checked(run, "after the failure"))
                except ExperimentFailed as restart_failure:
                    cause += f"; {restart_failure.cause}"
            failed = replace(started, status="failed", error=cause, completed_at=utc_now())
            self.replace(started, failed)
            return self.outcome(
                True,
                f"{self.exp_id}: {cause}",
                status="failed",
                attempts=failed.attempts,
                error=cause,
                **({"rc": exc.rc} if exc.rc is not None else {}),  # None: the CLI did not run
                stderr_tail=exc.stderr_tail,
                service_restarts=run.budget.made,
                health=self.health,
                **self.diff_of(previous, failed),
            )
        completed = replace(
            started, status="completed", result_path=self.result_path, completed_at=utc_now()
        )
        self.replace(started, completed)
        return self.outcome(
            True,
            service_restarts=run.budget.made,
            health=self.health,
            **self.diff_of(previous, completed),
            **completed_fields(completed, result),
        )

    def checked(self, run: ServiceExec, when: str) -> dict[str, Any]:
        """The health check's report; a warning when it found a problem left unmended."""
        report = run.check_health(when)
        if report["problem"] is not None and not report["restarted"]:
            self.warnings.append(
                f"service {self.params['service']!r} failed its health check {when} "
                f"({report['problem']}), but health_check.max_restarts "
                f"({self.params['max_restarts']}) restarts were made in this run already: "
                "going on without a restart"
            )
        return report


def run_attempt(
    params: Mapping[str, Any],
    check_mode: bool = False,
    diff: bool = False,
    compose: Compose | None = None,
) -> Outcome:
    """Run one experiment's attempt as the `lem_experiment` module's parameters say.

    A LemError (an invalid argument, a manifest that cannot be read or changed, an
    earlier attempt that does not end) is a failed Outcome with every key documented as
    always returned.
    """
    attempt = Attempt(params, check_mode, diff, compose)
    try:
        return attempt.run()
    except LemError as exc:
        return attempt.early_failure(str(exc))
