"""One campaign per host at a time (issue 21): the host lock, <state root>/host.lock.

Real ansible-playbook, real Docker, the CPU image, one host (localhost) whose state root,
compose project and venv every campaign here shares, as campaigns on one machine do.
One module-scoped sequence of runs, read by every test here: lock-killed is SIGKILLed
holding the lock; lock-a takes it over and measures; while it does, a waiter in wait mode
waits for the host, lock-b is refused and lock-b --check runs; the waiter runs after lock-a.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from fixtures.campaign import (
    CampaignRun,
    HostDirs,
    compose_down,
    read_json,
    run_campaign,
    tiny_campaign,
    wait_for,
    write_yaml,
)
from fixtures.faults import (
    ControllerRun,
    PreparedHost,
    campaign_vars,
    local_inventory,
    running_exp_id,
    state_dir,
)
from python_on_whales import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Long enough for the refused campaign and its --check to run, and the waiter to reach the
# lock, while the first measures.
HELD_WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Host:
    dirs: HostDirs
    inventory: Path
    root: Path

    @property
    def lock(self) -> Path:
        return self.dirs.root / "state" / "host.lock"

    def holder(self) -> dict | None:
        text = self.lock.read_text(encoding="utf-8") if self.lock.exists() else ""
        return json.loads(text) if text.strip() else None

    def variables(self, campaign: str, window: float = 0.5, **extra: object) -> dict:
        spec = tiny_campaign(campaign, batch_sizes=(1,), cycles=1)
        spec["configs"][0]["measurement"]["min_window_seconds"] = window
        campaign_file = write_yaml(self.root / f"{campaign}.yml", spec)
        return {**campaign_vars(campaign_file, self.root / "results", self.dirs), **extra}

    def container_ids(self) -> list[str]:
        listed = subprocess.run(
            ["docker", "compose", "-p", self.dirs.project, "ps", "-q"],
            capture_output=True,
            text=True,
            check=True,
        )
        return sorted(listed.stdout.split())

    def spans(self, campaign: str) -> list[tuple[datetime, datetime]]:
        """When each experiment of `campaign` measured, from its result files."""
        results = sorted((state_dir(self.dirs, campaign) / "results").glob("*/result.json"))
        assert results, f"no results of {campaign}"
        timings = [read_json(path)["timing"] for path in results]
        return [
            (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
            for t in timings
        ]


@contextmanager
def shared_host(root: Path, prepared_host: PreparedHost, prefix: str) -> Iterator[Host]:
    root.mkdir(parents=True, exist_ok=True)
    dirs = prepared_host.dirs(root / "host", prefix)
    yield Host(dirs, local_inventory(root / "inventory.yml"), root)
    compose_down(dirs.project)


@dataclass(frozen=True)
class Sequence:
    host: Host
    killed_pid: int
    first: CampaignRun  # took the killed run's lock over, held it while it measured
    first_pid: int
    second: CampaignRun  # refused while the first measured
    check: CampaignRun  # the second with --check, while the first measured
    waiter: CampaignRun  # in wait mode: ran after the first
    ids_before: list[str]
    ids_after: list[str]
    lock_before: bytes
    lock_after_check: bytes
    holder_after: dict | None


@pytest.fixture(scope="module")
def sequence(
    tmp_path_factory: pytest.TempPathFactory,
    prepared_host: PreparedHost,
    cpu_image: str,
    docker_engine: DockerClient,
) -> Iterator[Sequence]:
    """lock-killed is SIGKILLed holding the lock; lock-a takes it over and measures; while
    it does, lock-b is refused and lock-b --check runs; lock-waiter, in wait mode, runs
    once lock-a is done. One host and one set of services for all of them."""
    with shared_host(tmp_path_factory.mktemp("lock"), prepared_host, "lem-lock") as host:
        with ControllerRun(host.inventory, host.variables("lock-killed"), host.root) as killed:
            wait_for(
                lambda: (host.holder() or {}).get("campaign") == "lock-killed",
                600,
                "lock-killed to hold the host",
            )
            killed.kill_tree()
        variables = host.variables("lock-a", window=HELD_WINDOW_SECONDS)
        waiter_vars = host.variables(
            "lock-waiter", lem_host_lock_wait_seconds=900, lem_host_lock_poll_seconds=1
        )
        with ControllerRun(host.inventory, variables, host.root) as first:
            wait_for(lambda: running_exp_id(host.dirs.manifest("lock-a")), 600, "lock-a to measure")
            ids_before, lock_before = host.container_ids(), host.lock.read_bytes()
            # The waiter plans beside the refused runs, so that it reaches the lock while
            # lock-a holds it: started after them, it came once lock-a's window was over
            # on a loaded machine.
            with ControllerRun(host.inventory, waiter_vars, host.root) as waiting:
                second = run_campaign(host.inventory, host.variables("lock-b"), host.root)
                check = run_campaign(
                    host.inventory, host.variables("lock-b"), host.root, options=["--check"]
                )
                lock_after_check = host.lock.read_bytes()
                ids_after = host.container_ids()
                first_done = first.finish()
                waiter = waiting.finish()
        yield Sequence(
            host,
            killed.pid,
            first_done,
            first.pid,
            second,
            check,
            waiter,
            ids_before,
            ids_after,
            lock_before,
            lock_after_check,
            host.holder(),
        )


def test_a_second_campaign_is_refused_naming_the_holder_and_the_first_completes(
    sequence: Sequence,
) -> None:
    assert sequence.second.returncode != 0
    refusal = next(
        line for line in sequence.second.output.splitlines() if "this host is held by" in line
    )
    assert "campaign 'lock-a'" in refusal and f"pid {sequence.first_pid}" in refusal
    assert "campaign 'lock-b' was not started here" in refusal
    # Refused before it touched the host: no state of its own, no services of its own.
    assert not state_dir(sequence.host.dirs, "lock-b").exists()
    assert sequence.first.returncode == 0, sequence.first.output[-4000:]
    entries = read_json(sequence.host.dirs.manifest("lock-a"))["entries"]
    assert {entry["status"] for entry in entries.values()} == {"completed"}


def test_no_container_of_the_first_campaign_is_recreated(sequence: Sequence) -> None:
    assert sequence.ids_before, "lock-a's services should be up while it measures"
    assert sequence.ids_after == sequence.ids_before


def test_check_mode_while_held_reports_the_holder_and_changes_nothing(sequence: Sequence) -> None:
    assert sequence.check.returncode == 0, sequence.check.output[-4000:]
    assert "this host is held by campaign 'lock-a'" in sequence.check.output
    assert sequence.lock_after_check == sequence.lock_before
    assert not state_dir(sequence.host.dirs, "lock-b").exists()


def test_the_lock_is_released_when_the_campaign_ends(sequence: Sequence) -> None:
    assert sequence.holder_after is None
    assert sequence.host.lock.exists()  # emptied, never removed


def test_a_killed_campaigns_lock_is_taken_over_and_the_take_over_is_logged(
    sequence: Sequence,
) -> None:
    line = next(
        line for line in sequence.first.output.splitlines() if "took the host lock over" in line
    )
    assert "campaign 'lock-killed'" in line
    assert f"ansible-playbook pid {sequence.killed_pid}" in line and "is gone" in line


def test_in_wait_mode_the_second_campaign_runs_after_the_first_without_overlap(
    sequence: Sequence,
) -> None:
    assert sequence.waiter.returncode == 0, sequence.waiter.output[-4000:]
    assert "RETRYING" in sequence.waiter.output and "Take the host lock" in sequence.waiter.output
    first_end = max(end for _, end in sequence.host.spans("lock-a"))
    waiter_start = min(start for start, _ in sequence.host.spans("lock-waiter"))
    assert first_end < waiter_start
