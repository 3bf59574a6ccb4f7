"""The host lock (lease.py): one campaign at a time on a host, across campaigns."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fixtures.controllers import StartController, kill_group

from llenergymeasure.lease import (
    read_host_lock,
    release_host_lock,
    start_ticks,
    take_host_lock,
)


def run_of(campaign: str, pid: int, controller: str | None = None) -> dict[str, Any]:
    """The holder record a campaign's ansible-playbook `pid` asks the lock for."""
    return {
        "campaign": campaign,
        "controller": controller or socket.gethostname(),
        "pid": pid,
        "start_ticks": start_ticks(pid),
    }


def test_a_free_host_lock_is_taken_and_names_campaign_controller_pid_and_time(
    tmp_path: Path, start_controller: StartController
) -> None:
    run, _ = start_controller()
    path = tmp_path / "state" / "host.lock"

    outcome = take_host_lock(path, run_of("a", run.pid))

    assert outcome["status"] == "acquired" and outcome["previous"] is None
    recorded = json.loads(path.read_text(encoding="utf-8"))
    assert recorded == outcome["holder"]
    assert (recorded["campaign"], recorded["pid"]) == ("a", run.pid)
    assert recorded["controller"] == socket.gethostname()
    assert datetime.fromisoformat(recorded["acquired_at"]).tzinfo is not None


def test_another_campaign_is_refused_while_the_holder_runs_and_nothing_is_written(
    tmp_path: Path, start_controller: StartController
) -> None:
    first, _ = start_controller()
    second, _ = start_controller()
    path = tmp_path / "host.lock"
    take_host_lock(path, run_of("a", first.pid))
    before = path.read_bytes()

    outcome = take_host_lock(path, run_of("b", second.pid))

    assert outcome["status"] == "held"
    assert outcome["holder"]["campaign"] == "a" and outcome["holder"]["pid"] == first.pid
    assert path.read_bytes() == before


def test_a_lock_whose_ansible_playbook_is_gone_is_taken_over_with_the_reason(
    tmp_path: Path, start_controller: StartController
) -> None:
    killed, _ = start_controller()
    path = tmp_path / "host.lock"
    take_host_lock(path, run_of("a", killed.pid))
    dead = run_of("a", killed.pid)
    kill_group(killed)
    second, _ = start_controller()

    outcome = take_host_lock(path, run_of("b", second.pid))

    assert outcome["status"] == "taken-over"
    assert outcome["previous"]["pid"] == dead["pid"]
    assert f"pid {dead['pid']}" in outcome["reason"] and "gone" in outcome["reason"]
    assert read_host_lock(path)["campaign"] == "b"


def test_a_lock_held_on_another_controller_is_taken_over_only_past_the_age_limit(
    tmp_path: Path, start_controller: StartController
) -> None:
    second, _ = start_controller()
    path = tmp_path / "host.lock"
    elsewhere = run_of("a", 1, controller="another-controller")
    taken_at = datetime(2026, 1, 1, tzinfo=UTC)
    take_host_lock(path, elsewhere, now=taken_at)

    young = take_host_lock(path, run_of("b", second.pid), 3600, now=taken_at + timedelta(hours=1))
    no_limit = take_host_lock(path, run_of("b", second.pid), 0, now=taken_at + timedelta(days=9))
    old = take_host_lock(
        path, run_of("b", second.pid), 3600, now=taken_at + timedelta(seconds=3601)
    )

    assert (young["status"], no_limit["status"]) == ("held", "held")
    assert old["status"] == "taken-over" and "over the limit of 3600 s" in old["reason"]
    assert read_host_lock(path)["campaign"] == "b"


def test_the_same_campaign_rerun_from_the_same_controller_takes_over_from_itself(
    tmp_path: Path, start_controller: StartController
) -> None:
    crashed, _ = start_controller()
    rerun, _ = start_controller()
    path = tmp_path / "host.lock"
    take_host_lock(path, run_of("a", crashed.pid))

    outcome = take_host_lock(path, run_of("a", rerun.pid))
    again = take_host_lock(path, run_of("a", rerun.pid))

    assert outcome["status"] == "taken-over" and "run again" in outcome["reason"]
    assert again["status"] == "already-held"
    assert read_host_lock(path)["pid"] == rerun.pid


def test_a_dry_run_decides_the_same_and_writes_nothing(
    tmp_path: Path, start_controller: StartController
) -> None:
    first, _ = start_controller()
    second, _ = start_controller()
    path = tmp_path / "host.lock"

    free = take_host_lock(path, run_of("a", first.pid), dry_run=True)
    assert free["status"] == "acquired" and not path.exists()

    take_host_lock(path, run_of("a", first.pid))
    before = path.read_bytes()
    held = take_host_lock(path, run_of("b", second.pid), dry_run=True)
    assert held["status"] == "held" and path.read_bytes() == before


def test_release_empties_only_the_holders_lock_and_a_waiter_then_gets_it(
    tmp_path: Path, start_controller: StartController
) -> None:
    first, _ = start_controller()
    waiting, _ = start_controller()
    path = tmp_path / "host.lock"
    take_host_lock(path, run_of("a", first.pid))

    assert take_host_lock(path, run_of("b", waiting.pid))["status"] == "held"
    assert release_host_lock(path, run_of("b", waiting.pid)) is False
    assert release_host_lock(path, run_of("a", first.pid)) is True
    assert path.exists() and path.read_text(encoding="utf-8") == ""
    assert take_host_lock(path, run_of("b", waiting.pid))["status"] == "acquired"
