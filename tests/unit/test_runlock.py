"""The campaign run lock (controller/runlock.py) with real processes named ansible-playbook."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fixtures.controllers import StartController, kill_group

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
