"""The campaign run lock (controller/runlock.py) with real processes named ansible-playbook,
and its release by `lem_plan state=released` (controller/prepare.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from fixtures.controllers import StartController, kill_group

from llenergymeasure.controller import prepare
from llenergymeasure.controller.runlock import (
    acquire_run_lock,
    release_run_lock,
    start_ticks,
)
from llenergymeasure.errors import ManifestLockError
from llenergymeasure.lease import controller_pid


def holder_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_controller_pid_is_the_topmost_ansible_playbook_above_the_process(
    start_controller: StartController,
) -> None:
    main, found_by_worker = start_controller(depth=2)

    assert found_by_worker == main.pid
    assert controller_pid() is None  # pytest runs under no ansible-playbook


def test_a_free_lock_is_acquired_and_records_the_holder(
    tmp_path: Path, start_controller: StartController
) -> None:
    run, _ = start_controller()
    path = tmp_path / "demo" / "run.lock"

    outcome = acquire_run_lock(path, "demo", run.pid)

    assert outcome.status == "acquired" and outcome.previous is None
    recorded = holder_of(path)
    assert (recorded["campaign"], recorded["pid"]) == ("demo", run.pid)
    assert recorded["start_ticks"] == start_ticks(run.pid)


def test_a_second_run_is_refused_naming_the_campaign_the_pid_and_the_file(
    tmp_path: Path, start_controller: StartController
) -> None:
    first, _ = start_controller()
    second, _ = start_controller()
    path = tmp_path / "run.lock"
    acquire_run_lock(path, "demo", first.pid)
    before = path.read_bytes()

    with pytest.raises(ManifestLockError) as refused:
        acquire_run_lock(path, "demo", second.pid)

    message = str(refused.value)
    assert "campaign 'demo'" in message
    assert f"pid {first.pid}" in message
    assert str(path) in message
    assert path.read_bytes() == before


def test_the_lock_of_a_killed_run_is_taken_over_and_reported(
    tmp_path: Path, start_controller: StartController
) -> None:
    killed, _ = start_controller()
    path = tmp_path / "run.lock"
    acquire_run_lock(path, "demo", killed.pid)
    kill_group(killed)
    rerun, _ = start_controller()

    outcome = acquire_run_lock(path, "demo", rerun.pid)

    assert outcome.status == "taken-over"
    assert outcome.previous is not None and outcome.previous.pid == killed.pid
    line = outcome.report_line()
    assert line is not None and f"pid {killed.pid}" in line and "no longer running" in line
    assert holder_of(path)["pid"] == rerun.pid


def test_a_pid_now_used_by_another_program_or_another_start_is_stale(
    tmp_path: Path, start_controller: StartController
) -> None:
    run, _ = start_controller()
    other_program = subprocess.Popen(["sleep", "600"])
    path = tmp_path / "run.lock"
    try:
        for stale_pid, ticks in (
            (other_program.pid, start_ticks(other_program.pid)),
            (run.pid, (start_ticks(run.pid) or 0) + 1),
        ):
            acquire_run_lock(path, "demo", stale_pid)
            recorded = holder_of(path) | {"start_ticks": ticks}
            path.write_text(json.dumps(recorded), encoding="utf-8")

            assert acquire_run_lock(path, "demo", run.pid).status == "taken-over"
            release_run_lock(path, run.pid)
    finally:
        other_program.kill()
        other_program.wait()


def test_the_holder_may_take_it_again_and_release_it(
    tmp_path: Path, start_controller: StartController
) -> None:
    run, _ = start_controller()
    other, _ = start_controller()
    path = tmp_path / "run.lock"
    acquire_run_lock(path, "demo", run.pid)

    assert acquire_run_lock(path, "demo", run.pid).status == "already-held"
    assert release_run_lock(path, other.pid) is False
    assert holder_of(path)["pid"] == run.pid
    assert release_run_lock(path, run.pid) is True
    assert path.read_bytes() == b""
    assert acquire_run_lock(path, "demo", other.pid).status == "acquired"


def test_a_holder_on_another_controller_counts_as_running(
    tmp_path: Path, start_controller: StartController
) -> None:
    run, _ = start_controller()
    path = tmp_path / "run.lock"
    acquire_run_lock(path, "demo", run.pid)
    path.write_text(json.dumps(holder_of(path) | {"controller": "elsewhere"}), encoding="utf-8")
    kill_group(run)
    rerun, _ = start_controller()

    with pytest.raises(ManifestLockError, match="on controller elsewhere"):
        acquire_run_lock(path, "demo", rerun.pid)


def test_an_unreadable_lock_file_holds_nothing(
    tmp_path: Path, start_controller: StartController
) -> None:
    run, _ = start_controller()
    path = tmp_path / "run.lock"
    path.write_text('{"campaign": "demo", "pi', encoding="utf-8")

    assert acquire_run_lock(path, "demo", run.pid).status == "acquired"
    assert holder_of(path)["pid"] == run.pid


# -- lem_plan state=released: the lock released by the playbook that took it ----------

LEM_PLAN = Path(__file__).resolve().parents[2] / "library" / "lem_plan.py"


def lem_plan_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lem_plan", LEM_PLAN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_errors(params: dict[str, Any]) -> list[str]:
    """What lem_plan's argument checks (as AnsibleModule runs them) say of `params`."""
    module = lem_plan_module()
    validator = ArgumentSpecValidator(
        module.ARGUMENT_SPEC,
        mutually_exclusive=[module.PLAN_LOCATION],
        required_if=module.REQUIRED_IF,
    )
    return [str(error) for error in validator.validate(params).errors]


def test_released_needs_only_the_lock_and_planned_still_needs_the_campaign() -> None:
    assert module_errors({"state": "released", "run_lock": "/r/demo/run.lock"}) == []
    assert module_errors({"state": "released"}) == [
        "state is released but all of the following are missing: run_lock"
    ]
    # state defaults to planned (the checks stop at the first missing set)
    assert module_errors({"run_lock": "/r/demo/run.lock"}) == [
        "state is planned but all of the following are missing: campaign_file, hosts"
    ]
    assert module_errors({"campaign_file": "c.yml", "hosts": ["h"]}) == [
        "state is planned but any of the following are missing: results_dir, plan_file"
    ]
    assert module_errors({"campaign_file": "c.yml", "hosts": ["h"], "results_dir": "r"}) == []


@pytest.fixture
def under_controller(
    start_controller: StartController, monkeypatch: pytest.MonkeyPatch
) -> subprocess.Popen[str]:
    """A fake ansible-playbook that the module finds above itself, as in a real run."""
    run, _ = start_controller()
    monkeypatch.setattr(prepare, "controller_pid", lambda: run.pid)
    return run


def test_the_holder_releases_its_lock_without_a_campaign_or_plan_file(
    tmp_path: Path, under_controller: subprocess.Popen[str]
) -> None:
    path = tmp_path / "demo" / "run.lock"
    acquire_run_lock(path, "demo", under_controller.pid)

    returned = prepare.release_campaign({"run_lock": str(path)}, dry_run=False)

    assert (returned["changed"], returned["run_lock_status"]) == (False, "released")
    assert path.read_bytes() == b""  # emptied, never removed
    assert returned["controller"]["pid"] == under_controller.pid
    again = prepare.release_campaign({"run_lock": str(path)}, dry_run=False)
    assert (again["changed"], again["run_lock_status"]) == (False, "not-held")


def test_check_mode_says_it_would_release_and_writes_nothing(
    tmp_path: Path, under_controller: subprocess.Popen[str]
) -> None:
    path = tmp_path / "run.lock"
    acquire_run_lock(path, "demo", under_controller.pid)
    before = path.read_bytes()

    returned = prepare.release_campaign({"run_lock": str(path)}, dry_run=True)

    assert (returned["changed"], returned["run_lock_status"]) == (False, "released")
    assert path.read_bytes() == before
    missing = tmp_path / "none" / "run.lock"
    assert prepare.release_campaign({"run_lock": str(missing)}, dry_run=True)["changed"] is False
    assert not missing.parent.exists()


def test_another_runs_lock_or_no_lock_file_is_left_alone(
    tmp_path: Path, start_controller: StartController, under_controller: subprocess.Popen[str]
) -> None:
    other, _ = start_controller()
    path = tmp_path / "run.lock"
    acquire_run_lock(path, "demo", other.pid)
    before = path.read_bytes()

    returned = prepare.release_campaign({"run_lock": str(path)}, dry_run=False)

    assert (returned["changed"], returned["run_lock_status"]) == (False, "not-held")
    assert path.read_bytes() == before
    missing = tmp_path / "none" / "run.lock"
    assert prepare.release_campaign({"run_lock": str(missing)}, dry_run=False)["changed"] is False
    assert not missing.parent.exists()


def test_releasing_without_an_ansible_playbook_above_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestLockError, match="cannot release the run lock: no ansible-playbook"):
        prepare.release_campaign({"run_lock": str(tmp_path / "run.lock")}, dry_run=False)
