"""Aggregate callback: campaign progress lines and the summary at the end of the play."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lem_campaign
type: aggregate
short_description: Progress lines and the bootstrap summary of LLenergyMeasure campaigns
description:
  - Follows every experiment of the playbook run, both those run now and those found
    already completed or failed (C(lem_experiment) results, and the C(completed) and
    C(failed_kept) items of C(lem_manifest) results), one per exp_id, for the progress
    lines and the counts. Results themselves never travel in return values; each
    host's result files reach C(CAMPAIGN_DIR/hosts/<host>/) as files
    (C(roles/lem_host/tasks/results.yml)).
  - Prints one progress line per C(lem_experiment) result, such as
    C([12/60] cfg=tiny-bs1 cycle=2 host=localhost 41.2 J 1520 tok/s, completed in 14 s;
    48 left, ETA 11m12s) (the line C(lem run) prints too). The ETA is the slowest host's
    experiments left times its median interval between two experiments finishing (gaps
    and checks included); hosts run in parallel.
  - When the summary play starts (below), or else at the end of the playbook, summarises
    the results tree C(CAMPAIGN_DIR) through the same function as C(lem aggregate),
    C(lem compare) and C(lem report) (C(llenergymeasure.results.aggregate.summarize_tree)),
    so the same run gives the same C(summary.json) whichever wrote it; writes
    C(summary.json), C(summary.csv) and C(summary.md) in C(CAMPAIGN_DIR), and prints the
    table with the completed, failed and not-run counts. Then writes
    C(CAMPAIGN_DIR/report.html) and its C(figures/*.png), as C(lem report) does (a report
    that cannot be drawn, e.g. without matplotlib, is a warning, not a failure).
  - An incomplete campaign is marked in the summary's warnings (the plan's experiments
    with no outcome on the tree, per host; hosts unreachable in this run are named so)
    and in the counts line.
  - C(CAMPAIGN_DIR) is the directory of the plan file of the play's last C(lem_plan) task
    (normally C(results/<campaign>/)), or O(results_dir)C(/<campaign>) when no C(lem_plan)
    task ran.
  - In check mode (C(--check)) it prints but writes nothing. Playbooks without these
    modules are left alone. A result hidden by C(no_log) has no progress line; the
    summary reads its file all the same.
  - A result file that is not a valid result is named in the summary's C(load_errors)
    and left out; a module return the callback cannot read is named in a warning.
  - The summary is written when a play with the variable C(lem_campaign_summary_play)
    set to true starts (the last play of C(playbooks/campaign.yml)); when it cannot be
    written, the callback sets the play variable C(lem_campaign_summary_error) to the
    reason, and that play fails on it. A callback cannot fail a play by itself. A
    playbook without such a play gets its summary at the end, where a failure to write
    it is printed as an error.
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
  baseline:
    description:
      - Config name; when set, the summary also holds each config's ratio to it per
        metric, paired by cycle (and C(comparison.csv) is written), as C(lem compare) prints.
    type: str
    ini:
      - section: callback_lem_campaign
        key: baseline
    env:
      - name: LEM_BASELINE
"""

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible import context
from ansible.plugins.callback import CallbackBase

try:
    from llenergymeasure.controller.progress import Pace
    from llenergymeasure.errors import LemError
    from llenergymeasure.results.aggregate import (
        LoadedResults,
        Summary,
        render_table,
        summarize_tree,
    )
    from llenergymeasure.results.aggregate import write_summary as write_summary_files
    from llenergymeasure.results.lines import experiment_line

    LEM_IMPORT_ERROR: str | None = None
except ImportError as exc:
    LEM_IMPORT_ERROR = str(exc)

MODULES = ("lem_plan", "lem_manifest", "lem_experiment")
SUMMARY_PLAY_VAR = "lem_campaign_summary_play"
SUMMARY_ERROR_VAR = "lem_campaign_summary_error"


@dataclass
class Outcome:
    """The last known state of one experiment in this playbook run."""

    exp_id: str
    config_name: str
    cycle: int | None
    host: str
    status: str  # "completed" or "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Campaign:
    """What the play has told the callback about the campaign so far."""

    name: str | None = None
    total: int | None = None
    plan_dir: Path | None = None  # where lem_plan keeps plan.json: the summary goes there too
    planned: dict[str, str] = field(default_factory=dict)  # exp_id -> host, from the plan
    unreachable: set[str] = field(default_factory=set)
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.exp_id] = outcome

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)


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
        error=data.get("error") or data.get("msg"),
    )


def is_safe_dir_name(name: str) -> bool:
    """A campaign name used as one path component: no separators, no '.' or '..'."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


class CallbackModule(CallbackBase):
    """Not a stdout callback: it adds lines and files next to whichever stdout callback runs."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lem_campaign"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.campaign = Campaign()
        self.pace = Pace()  # per-host intervals between experiments, for the ETA
        self.hidden_results = 0
        self.summary_done = False

    # -- collecting -------------------------------------------------------------------

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        if task.action.rsplit(".", 1)[-1] == "lem_experiment":
            self.pace.started(host.get_name(), time.monotonic())

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
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # a module return this callback cannot read: named, and left out
            problem = (
                f"a {name} result of host {result.host.get_name()} is malformed, left out: {exc!r}"
            )
            self._display.warning(f"lem_campaign: {problem}")

    def _on_plan(self, data: dict[str, Any], host: str) -> None:
        if data.get("failed") or "campaign_name" not in data:
            return
        self.campaign.name = data["campaign_name"]
        self.campaign.total = data.get("total")
        if data.get("plan_file"):
            self.campaign.plan_dir = Path(data["plan_file"]).parent
        experiments = (data.get("plan") or {}).get("experiments") or []
        self.campaign.planned = {e["exp_id"]: e["host"] for e in experiments}

    def _on_manifest(self, data: dict[str, Any], host: str) -> None:
        if data.get("failed"):
            return
        for item in data.get("completed", []):
            fields = {k: item[k] for k in ("exp_id", "config_name", "cycle", "host")}
            self.campaign.record(Outcome(status="completed", metrics=item.get("metrics"), **fields))
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
        line = experiment_line(vars(outcome), done, self.campaign.total, skipped)
        duration = self.pace.finished(host, time.monotonic(), skipped)
        if not skipped:
            left = Counter(
                h for e, h in self.campaign.planned.items() if e not in self.campaign.outcomes
            )
            line += self.pace.line_suffix(outcome.status, duration, left)
        self._display.display(line)
        if "ansible_loop_var" in data:  # in a loop, the next item starts now
            self.pace.started(host, time.monotonic())

    # -- at the end -------------------------------------------------------------------

    def v2_playbook_on_play_start(self, play: Any) -> None:
        """Write the summary as the summary play starts; its tasks fail on a write error."""
        if self.summary_done or play.vars.get(SUMMARY_PLAY_VAR) is not True:
            return
        self.summary_done = True
        error = self._report()
        if error is not None:
            play.vars[SUMMARY_ERROR_VAR] = error

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if not self.summary_done:
            error = self._report()
            if error is not None:
                self._display.error(f"lem_campaign: {error}")

    def _report(self) -> str | None:
        """Print the summary and write its files; the reason when they were not written."""
        if self.hidden_results:
            self._display.warning(
                f"lem_campaign: {self.hidden_results} lem result(s) hidden by no_log have no "
                "progress line; the summary reads their result files all the same"
            )
        if not self.campaign.outcomes and self.campaign.name is None:
            return None
        if LEM_IMPORT_ERROR:
            return f"summary not written: {LEM_IMPORT_ERROR}"
        try:
            self._summarize()
        except Exception as exc:  # whatever the cause, it is named and fails the summary play
            reason = str(exc) if isinstance(exc, LemError) else f"{type(exc).__name__}: {exc}"
            return f"summary not written: {reason}"
        return None

    def _summarize(self) -> None:
        """The summary of the campaign's results tree, which the hosts' result files
        reached as files (roles/lem_host/tasks/results.yml): the same function and the
        same summary.json as `lem aggregate CAMPAIGN_DIR`."""
        campaign_dir = self._campaign_dir()
        dry_run = bool(context.CLIARGS.get("check"))
        loaded = None
        if campaign_dir.is_dir():
            summary, loaded = summarize_tree(
                campaign_dir,
                unreachable=self.campaign.unreachable,
                baseline=self.get_option("baseline"),
            )
        if loaded is None or not loaded.results:  # an earlier summary stays as it is
            self._display.display(self._counts_line())
            if dry_run:
                self._display.display("lem: check mode: summary not written")
            return
        self._display.display(render_table(summary).rstrip("\n"))
        self._display.display(self._counts_line())
        if dry_run:
            self._display.display("lem: check mode: summary not written")
            return
        for path in write_summary_files(summary, campaign_dir):
            self._display.display(f"lem: wrote {path}")
        self._write_report(summary, loaded, campaign_dir)

    def _write_report(self, summary: Summary, loaded: LoadedResults, campaign_dir: Path) -> None:
        """report.html next to the summary; matplotlib is imported only here."""
        try:
            from llenergymeasure.results.report import manifest_failures, write_report_files

            failures = manifest_failures(campaign_dir)
            report = write_report_files(summary, loaded.results, campaign_dir, failures)
        except Exception as exc:  # the report is a view of the summary, not a result
            self._display.warning(f"lem_campaign: report not written: {exc}")
        else:
            self._display.display(f"lem: wrote {report.html}")

    def _campaign_dir(self) -> Path:
        if self.campaign.plan_dir is not None:
            return self.campaign.plan_dir
        # exp_id = CAMPAIGN__CONFIG__cNN: the campaign's name when no lem_plan task ran
        name = self.campaign.name or next(iter(self.campaign.outcomes)).split("__")[0]
        if not name or not is_safe_dir_name(name):
            raise ValueError(f"campaign name {name!r} cannot name a directory")
        return Path(self.get_option("results_dir")) / name

    def _counts_line(self) -> str:
        completed, failed = self.campaign.count("completed"), self.campaign.count("failed")
        name = self.campaign.name or "?"
        line = f"lem: campaign {name}: {completed} completed, {failed} failed"
        if self.campaign.total is not None:
            line += f", {max(self.campaign.total - completed - failed, 0)} not run"
        if self.campaign.unreachable:
            line += f" (unreachable: {', '.join(sorted(self.campaign.unreachable))})"
        return line
