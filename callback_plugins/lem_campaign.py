"""Aggregate callback: campaign progress lines and the summary at the end of the play."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lem_campaign
type: aggregate
short_description: Progress lines and the bootstrap summary of LLenergyMeasure campaigns
description:
  - Collects the result of every experiment of the playbook run, both those run now and
    those found already completed (C(lem_experiment) results, and the C(completed) items
    of C(lem_manifest) results), one per exp_id.
  - Prints one progress line per C(lem_experiment) result, such as
    C([12/60] cfg=tiny-bs1 cycle=2 host=localhost 41.2 J 1520 tok/s).
  - At the end of the playbook, writes each result to
    C(CAMPAIGN_DIR/hosts/<host>/<exp_id>/result.json) (only when its content changed),
    aggregates them into bootstrap confidence intervals per configuration and hardware,
    writes C(summary.json), C(summary.csv) and C(summary.md) in C(CAMPAIGN_DIR), and prints
    the table with the completed, failed and not-run counts.
  - An incomplete campaign is marked in the summary's warnings and in the counts line,
    which list, per host, the experiments of the plan with no outcome in this run, and
    name the hosts that were unreachable.
  - Releases the campaign's run lock taken by C(lem_plan) (C(run_lock) in its result) when
    the playbook ends; a run that is killed leaves it to be taken over by the next run.
  - C(CAMPAIGN_DIR) is the directory of the plan file of the play's last C(lem_plan) task
    (normally C(results/<campaign>/)), or O(results_dir)C(/<campaign>) when no C(lem_plan)
    task ran.
  - In check mode (C(--check)) it prints but writes nothing. A failure to write is a
    warning; it never fails the play. Playbooks without these modules are left alone.
requirements:
  - the llenergymeasure package on the controller's Python
  - enabled in ansible.cfg (C(callbacks_enabled = lem_campaign))
options:
  results_dir:
    description:
      - Directory holding one subdirectory per campaign, used when the play has no
        C(lem_plan) task to tell where the campaign's plan is.
      - A relative path in ansible.cfg is relative to that file; otherwise to the current
        directory.
    type: path
    default: results
    ini:
      - section: callback_lem_campaign
        key: results_dir
    env:
      - name: LEM_RESULTS_DIR
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible import context
from ansible.plugins.callback import CallbackBase

try:
    from llenergymeasure.campaign.runlock import release_run_lock
    from llenergymeasure.files import atomic_write_text
    from llenergymeasure.results.aggregate import aggregate_results, format_value, render_table
    from llenergymeasure.results.aggregate import write_summary as write_summary_files
    from llenergymeasure.results.schema import ExperimentResult

    LEM_IMPORT_ERROR: str | None = None
except ImportError as exc:
    LEM_IMPORT_ERROR = str(exc)

MODULES = ("lem_plan", "lem_manifest", "lem_experiment")


@dataclass
class Outcome:
    """The last known state of one experiment in this playbook run."""

    exp_id: str
    config_name: str
    cycle: int | None
    host: str
    status: str  # "completed" or "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Campaign:
    """What the play has told the callback about the campaign so far."""

    name: str | None = None
    total: int | None = None
    plan_dir: Path | None = None  # where lem_plan keeps plan.json: the summary goes there too
    run_lock: Path | None = None  # held by this ansible-playbook process until the end
    planned: dict[str, str] = field(default_factory=dict)  # exp_id -> host, from the plan
    unreachable: set[str] = field(default_factory=set)
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.exp_id] = outcome

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)

    def not_run(self) -> dict[str, list[str]]:
        """Planned experiments with no outcome in this run, by host, in plan order."""
        left: dict[str, list[str]] = {}
        for exp_id, host in self.planned.items():
            if exp_id not in self.outcomes:
                left.setdefault(host, []).append(exp_id)
        return left

    def incomplete_notes(self) -> list[str]:
        """One line per host with experiments left, saying why where it is known."""
        return [
            f"{host}{' unreachable' if host in self.unreachable else ''}: "
            f"{len(exp_ids)} experiment(s) not run in this run ({', '.join(exp_ids)}); "
            "run the playbook again to finish them"
            for host, exp_ids in self.not_run().items()
        ]


def module_name(result: Any) -> str:
    """'lem_experiment' for lem_experiment, ansible.legacy.lem_experiment, ..."""
    action = getattr(result.task, "resolved_action", None) or result.task.action
    return str(action).rsplit(".", 1)[-1]


def outcome_of(data: dict[str, Any], host: str) -> Outcome | None:
    """The Outcome in a lem_experiment return, or None when nothing was settled (check mode)."""
    status = data.get("status")
    if status not in ("completed", "failed") or not data.get("exp_id"):
        return None
    return Outcome(
        exp_id=data["exp_id"],
        config_name=data.get("config_name", "?"),
        cycle=data.get("cycle"),
        host=data.get("host") or host,
        status=status,
        metrics=data.get("metrics") or {},
        result=data.get("result"),
        error=data.get("error") or data.get("msg"),
    )


def progress_line(outcome: Outcome, done: int, total: int | None, skipped: bool) -> str:
    """`[12/60] cfg=tiny-bs1 cycle=2 host=localhost 41.2 J 1520 tok/s`."""
    head = (
        f"[{done}/{total if total is not None else '?'}] cfg={outcome.config_name} "
        f"cycle={outcome.cycle} host={outcome.host}"
    )
    if outcome.status == "failed":
        return f"{head} FAILED: {outcome.error}"
    energy = format_value(outcome.metrics.get("energy_j"))
    throughput = format_value(outcome.metrics.get("output_tokens_per_s"))
    return f"{head} {energy} J {throughput} tok/s" + (" (completed before)" if skipped else "")


def is_safe_dir_name(name: str) -> bool:
    """A host or exp_id used as one path component: no separators, no '.' or '..'."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


class CallbackModule(CallbackBase):
    """Not a stdout callback: it adds lines and files next to whichever stdout callback runs."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lem_campaign"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.campaign = Campaign()
        self.hidden_results = 0

    # -- collecting -------------------------------------------------------------------

    def v2_runner_on_ok(self, result: Any) -> None:
        self._collect(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._collect(result)

    def v2_runner_item_on_ok(self, result: Any) -> None:
        self._collect(result)

    def v2_runner_item_on_failed(self, result: Any) -> None:
        self._collect(result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self.campaign.unreachable.add(result.host.get_name())

    def _collect(self, result: Any) -> None:
        name = module_name(result)
        data = result.result
        # A loop's final result repeats the items already seen one by one.
        if name not in MODULES or "results" in data:
            return
        if data.get("censored"):
            self.hidden_results += 1
            return
        try:
            {
                "lem_plan": self._on_plan,
                "lem_manifest": self._on_manifest,
                "lem_experiment": self._on_experiment,
            }[name](data, result.host.get_name())
        except Exception as exc:  # a malformed result must not break the play
            self._display.warning(f"lem_campaign: ignoring a {name} result: {exc}")

    def _on_plan(self, data: dict[str, Any], host: str) -> None:
        if data.get("failed") or "campaign_name" not in data:
            return
        self.campaign.name = data["campaign_name"]
        self.campaign.total = data.get("total")
        if data.get("plan_file"):
            self.campaign.plan_dir = Path(data["plan_file"]).parent
        if data.get("run_lock"):
            self.campaign.run_lock = Path(data["run_lock"])
        experiments = (data.get("plan") or {}).get("experiments") or []
        self.campaign.planned = {e["exp_id"]: e["host"] for e in experiments}

    def _on_manifest(self, data: dict[str, Any], host: str) -> None:
        if data.get("failed"):
            return
        for item in data.get("completed", []):
            self.campaign.record(Outcome(status="completed", **item))
        for item in data.get("failed_kept", []):
            error = item.get("error")
            fields = {k: item[k] for k in ("exp_id", "config_name", "cycle", "host")}
            self.campaign.record(Outcome(status="failed", error=error, **fields))
        counts = data.get("counts", {})
        self._display.display(
            f"lem: host={host} {counts.get('completed', 0)} completed before, "
            f"{counts.get('pending', 0)} to run, {counts.get('failed', 0)} failed (kept)"
        )

    def _on_experiment(self, data: dict[str, Any], host: str) -> None:
        outcome = outcome_of(data, host)
        if outcome is None:
            return
        self.campaign.record(outcome)
        done = len(self.campaign.outcomes)
        skipped = not data.get("changed", False)
        self._display.display(progress_line(outcome, done, self.campaign.total, skipped))

    # -- at the end -------------------------------------------------------------------

    def v2_playbook_on_stats(self, stats: Any) -> None:
        try:
            self._report()
        finally:
            self._release_run_lock()

    def _release_run_lock(self) -> None:
        """Best effort: a lock left behind is taken over by the next run, with a note."""
        if self.campaign.run_lock is None or LEM_IMPORT_ERROR:
            return
        try:
            release_run_lock(self.campaign.run_lock, os.getpid())
        except Exception as exc:
            self._display.warning(f"lem_campaign: run lock not released: {exc}")

    def _report(self) -> None:
        if self.hidden_results:
            self._display.warning(
                f"lem_campaign: {self.hidden_results} lem result(s) hidden by no_log were "
                "left out of the summary"
            )
        if not self.campaign.outcomes and self.campaign.name is None:
            return
        if LEM_IMPORT_ERROR:
            self._display.warning(f"lem_campaign: no summary: {LEM_IMPORT_ERROR}")
            return
        try:
            self._summarize()
        except Exception as exc:  # a summary that cannot be written must not fail the play
            self._display.warning(f"lem_campaign: summary not written: {exc}")

    def _summarize(self) -> None:
        completed = [o for o in self.campaign.outcomes.values() if o.status == "completed"]
        if not completed:  # nothing to aggregate; an earlier summary stays as it is
            self._display.display(self._counts_line())
            return
        campaign_dir = self._campaign_dir()
        results = [ExperimentResult.model_validate(o.result) for o in completed]
        dry_run = bool(context.CLIARGS.get("check"))
        sources = None if dry_run else self._write_results(campaign_dir, completed, results)
        summary = aggregate_results(results, sources=sources)
        summary.warnings.extend(self.campaign.incomplete_notes())
        self._display.display(render_table(summary).rstrip("\n"))
        self._display.display(self._counts_line())
        if dry_run:
            self._display.display("lem: check mode: summary not written")
            return
        for path in write_summary_files(summary, campaign_dir):
            self._display.display(f"lem: wrote {path}")

    def _campaign_dir(self) -> Path:
        if self.campaign.plan_dir is not None:
            return self.campaign.plan_dir
        name = self.campaign.name or next(
            (o.result or {}).get("identity", {}).get("campaign_name")
            for o in self.campaign.outcomes.values()
            if o.result is not None
        )
        if not name or not is_safe_dir_name(name):
            raise ValueError(f"campaign name {name!r} cannot name a directory")
        return Path(self.get_option("results_dir")) / name

    def _write_results(
        self, campaign_dir: Path, outcomes: list[Outcome], results: list[ExperimentResult]
    ) -> list[str] | None:
        """Store each result under hosts/<host>/<exp_id>/; their paths, or None if any failed."""
        paths: list[str] = []
        for outcome, result in zip(outcomes, results, strict=True):
            path = campaign_dir / "hosts" / outcome.host / outcome.exp_id / "result.json"
            try:
                if not (is_safe_dir_name(outcome.host) and is_safe_dir_name(outcome.exp_id)):
                    raise ValueError(f"unsafe host {outcome.host!r} or exp_id {outcome.exp_id!r}")
                write_if_changed(path, result.model_dump_json(indent=2) + "\n")
            except (OSError, ValueError) as exc:
                self._display.warning(f"lem_campaign: result not stored at {path}: {exc}")
            else:
                paths.append(str(path))
        return paths if len(paths) == len(outcomes) else None

    def _counts_line(self) -> str:
        completed, failed = self.campaign.count("completed"), self.campaign.count("failed")
        name = self.campaign.name or "?"
        line = f"lem: campaign {name}: {completed} completed, {failed} failed"
        if self.campaign.total is not None:
            line += f", {max(self.campaign.total - completed - failed, 0)} not run"
        if self.campaign.unreachable:
            line += f" (unreachable: {', '.join(sorted(self.campaign.unreachable))})"
        return line
