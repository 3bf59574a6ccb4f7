"""Preparing a campaign run on the controller: validate, take the run lock, plan.

What the `lem_plan` module does: the campaign is validated as `lem validate` does, the
run lock is held for the `ansible-playbook` above the module (never run unlocked), and
the plan is built or reused (`plan.plan_or_reuse`). With `state: released`, at the end
of the playbook that took it, the same module releases the lock (`release_campaign`).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llenergymeasure.config.loader import LoadedCampaign, load_campaign
from llenergymeasure.controller.plan import plan_or_reuse
from llenergymeasure.controller.runlock import (
    RUN_LOCK_NAME,
    acquire_run_lock,
    holds_run_lock,
    release_run_lock,
)
from llenergymeasure.errors import ManifestLockError
from llenergymeasure.lease import controller_pid, start_ticks

PLAN_FILE_NAME = "plan.json"


def plan_path(params: Mapping[str, Any], loaded: LoadedCampaign) -> Path:
    """`plan_file`, or `results_dir/<campaign>/plan.json`."""
    if params["plan_file"]:
        return Path(params["plan_file"])
    return Path(params["results_dir"]) / loaded.campaign.campaign_name / PLAN_FILE_NAME


def take_run_lock(lock_path: Path, campaign: str) -> tuple[dict[str, Any], list[str]]:
    """Hold the campaign's run lock for the ansible-playbook running this module.

    Returns the module's run_lock fields and the lines to add to the plan report.
    Without an ansible-playbook above it there is no run to hold the lock: refused,
    never run unlocked.
    """
    pid = _playbook_pid(lock_path, f"take the run lock of campaign {campaign!r}")
    outcome = acquire_run_lock(lock_path, campaign, pid)
    line = outcome.report_line()
    return {"run_lock": str(lock_path), "run_lock_status": outcome.status}, [line] if line else []


def _playbook_pid(lock_path: Path, doing: str) -> int:
    """The ansible-playbook above this module; refused without one, never run unlocked."""
    pid = controller_pid()
    if pid is None:
        raise ManifestLockError(
            f"{lock_path}: cannot {doing}: no ansible-playbook process above this module "
            "(reached over SSH?); run lem_plan on the controller with a local connection, "
            "as playbooks/campaign.yml does"
        )
    return pid


def release_campaign(params: Mapping[str, Any], dry_run: bool) -> dict[str, Any]:
    """`lem_plan` with `state: released`: empty the run lock this ansible-playbook holds.

    Needs only the lock's path (`run_lock`, as the planning task returned it): no campaign
    file, no plan. A lock another run holds, or nobody, is left as it is. Never `changed`:
    the lock is this run's own, taken by its planning task without a change reported, so
    emptying it leaves the controller as the run found it, and a re-run reports
    changed=0 (Molecule's idempotence step). `run_lock_status` says what was done.
    `dry_run` (check mode) reads the lock and writes nothing.
    """
    lock_path = Path(params["run_lock"])
    pid = _playbook_pid(lock_path, "release the run lock")
    held = holds_run_lock(lock_path, pid)
    if held and not dry_run:
        held = release_run_lock(lock_path, pid)
    return {
        "changed": False,
        "run_lock": str(lock_path),
        "run_lock_status": "released" if held else "not-held",
        "controller": controller_identity(),
    }


def controller_identity() -> dict[str, Any] | None:
    """The ansible-playbook running this module, as the host lock records its holder."""
    pid = controller_pid()
    if pid is None:
        return None
    return {"controller": socket.gethostname(), "pid": pid, "start_ticks": start_ticks(pid)}


def plan_campaign(params: Mapping[str, Any], dry_run: bool) -> dict[str, Any]:
    """Validate, lock, then build or reuse the plan: the module's return values.

    `dry_run` (check mode) writes nothing and takes no lock, so it may run beside a
    real run. LemError when the campaign is invalid or another run holds the lock.
    """
    loaded = load_campaign(params["campaign_file"])
    path = plan_path(params, loaded)
    lock: dict[str, Any] = {"run_lock": None, "run_lock_status": None}
    lock_report: list[str] = []
    if not dry_run:
        lock, lock_report = take_run_lock(
            path.parent / RUN_LOCK_NAME, loaded.campaign.campaign_name
        )
    plan, report = plan_or_reuse(
        loaded, params["hosts"], path, replan=params["replan"], dry_run=dry_run
    )
    return {
        "changed": report.status != "reused",
        "plan": plan.model_dump(mode="json"),
        "report": report.lines() + lock_report,
        "status": report.status,
        "campaign_name": plan.campaign_name,
        "total": len(plan.experiments),
        "plan_file": str(path),
        "controller": controller_identity(),
        **lock,
    }
