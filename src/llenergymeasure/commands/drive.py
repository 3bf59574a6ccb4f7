"""Run the campaign playbook through ansible-runner's Python API: `run_campaign`, `lem run`.

The playbook runs exactly as `ansible-playbook playbooks/campaign.yml -i INVENTORY -e
lem_campaign_file=CAMPAIGN` would, from the project directory and with its ansible.cfg
(the lem_campaign callback included, so the summary and report are written as usual).
Every line Ansible prints goes to `results/<campaign>/logs/run-<UTC time>.log`; the
caller sees structured progress from the event stream: the plan's total from the
lem_plan task, then the experiments settled before (lem_manifest), then one `Progress` per
lem_experiment result, its line built as the lem_campaign callback builds it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.errors import LemError
from llenergymeasure.results.aggregate import Summary
from llenergymeasure.results.lines import experiment_line

PLAYBOOK = Path("playbooks") / "campaign.yml"
RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_item_on_ok", "runner_item_on_failed")


@dataclass(frozen=True)
class Progress:
    """What the event stream told so far: the plan's total and experiments settled."""

    total: int | None
    done: int
    line: str | None = None  # the experiment just settled, one line; None for the plan


@dataclass
class CampaignRun:
    """The outcome of `run_campaign`."""

    rc: int  # ansible-playbook's exit status
    status: str  # ansible-runner's: successful, failed, ...
    log: Path
    campaign_dir: Path
    summary: Summary | None  # summary.json as written by this run, if it was


class _EventStream:
    """ansible-runner's event_handler: writes the log, follows the plan and experiments."""

    def __init__(self, log: TextIO, on_progress: Callable[[Progress], None] | None) -> None:
        self.log = log
        self.on_progress = on_progress
        self.total: int | None = None
        self.settled: set[str] = set()

    def __call__(self, event: dict[str, Any]) -> bool:
        if event.get("stdout"):
            self.log.write(event["stdout"] + "\n")
            self.log.flush()
        # A loop's items come one by one (runner_item_*); its final result repeats them.
        if event.get("event") in RESULT_EVENTS:
            self._result(event.get("event_data") or {})
        return True  # keep the event in ansible-runner's artifacts too

    def _result(self, data: Mapping[str, Any]) -> None:
        action = str(data.get("task_action", "")).rsplit(".", 1)[-1]
        res = data.get("res") or {}
        if "results" in res:
            return
        if action == "lem_plan" and isinstance(res.get("total"), int):
            self.total = res["total"]
        elif action == "lem_manifest" and not res.get("failed"):
            # settled before this run: counted, as the callback counts them
            for item in [*res.get("completed", []), *res.get("failed_kept", [])]:
                self.settled.add(item["exp_id"])
        elif action == "lem_experiment" and res.get("status") in ("completed", "failed"):
            self.settled.add(res["exp_id"])
            record = {**res, "host": res.get("host") or data.get("host", "?")}
            line = experiment_line(record, len(self.settled), self.total, not res.get("changed"))
            self._tell(Progress(self.total, len(self.settled), line))
            return
        else:
            return
        self._tell(Progress(self.total, len(self.settled)))

    def _tell(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)


def _results_dir(project: Path, extra_vars: Mapping[str, Any]) -> Path:
    """Where the playbook puts results: lem_results_dir, default <project>/results."""
    given = extra_vars.get("lem_results_dir")
    return Path(given).resolve() if given else project / "results"


def _summary_since(path: Path, since: float) -> Summary | None:
    try:
        if path.stat().st_mtime < since:
            return None
        return Summary.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def run_campaign(
    campaign_file: str | Path,
    inventory: str | Path,
    extra_vars: Mapping[str, Any] | None = None,
    *,
    project_dir: str | Path = ".",
    on_progress: Callable[[Progress], None] | None = None,
) -> CampaignRun:
    """Run playbooks/campaign.yml of `project_dir` on `inventory` for `campaign_file`.

    Raises LemError before anything runs when the campaign file is invalid or the
    project has no campaign playbook; otherwise returns the run's outcome, whatever it is.
    """
    import ansible_runner  # the controller extra; imported when a campaign runs

    project = Path(project_dir).resolve()
    if not (project / PLAYBOOK).is_file():
        raise LemError(f"{project}: no {PLAYBOOK} here (run from the project's root or --project)")
    campaign_path = Path(campaign_file).resolve()
    name = load_campaign(campaign_path).campaign.campaign_name
    extra = {**(extra_vars or {}), "lem_campaign_file": str(campaign_path)}
    campaign_dir = _results_dir(project, extra) / name
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_path = campaign_dir / "logs" / f"run-{stamp}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).timestamp()
    with log_path.open("w", encoding="utf-8") as log, tempfile.TemporaryDirectory() as tmp:
        runner = ansible_runner.run(
            private_data_dir=tmp,
            project_dir=str(project),
            playbook=str(project / PLAYBOOK),
            inventory=str(Path(inventory).resolve()),
            extravars=extra,
            envvars={
                # The playbook's controller tasks call this Python's tools (pip, ansible-*).
                "PATH": os.pathsep.join(
                    (str(Path(sys.executable).parent), os.environ.get("PATH", ""))
                ),
                "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
                # ansible-runner sets this variable for its own callback, which hides the
                # ansible.cfg setting: name the project's callbacks here.
                "ANSIBLE_CALLBACK_PLUGINS": str(project / "callback_plugins"),
            },
            event_handler=_EventStream(log, on_progress),
            quiet=True,
        )
    return CampaignRun(
        rc=runner.rc,
        status=runner.status,
        log=log_path,
        campaign_dir=campaign_dir,
        summary=_summary_since(campaign_dir / "summary.json", started),
    )
