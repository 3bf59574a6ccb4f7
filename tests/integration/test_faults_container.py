"""Faults of the backend service (issue 5, items 2 and 3): its container killed during an
experiment, and the Docker daemon restarted during a campaign. Real ansible-playbook,
real Docker, the CPU image, localhost."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import (
    REPO,
    HostDirs,
    compose_down,
    container_runs,
    manifest_entries,
    run_campaign,
    tiny_campaign,
    wait_for,
    write_yaml,
)
from fixtures.faults import (
    ControllerRun,
    PreparedHost,
    assert_completed_exactly_once,
    campaign_vars,
    edit_yaml,
    local_inventory,
    summary_counts,
)
from python_on_whales import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAMPAIGN = "svcfault"
ALL = {f"{CAMPAIGN}__bs{b}__c{c:02d}" for b in (1, 2) for c in (1, 2)}
FIRST = f"{CAMPAIGN}__bs1__c01"  # interleaved order: bs1 c1, bs2 c1, bs1 c2, bs2 c2
DOCKER_PIDFILE = Path("/var/run/docker.pid")
INSTALL_DOCKER = REPO / "scripts" / "install-docker.sh"


@pytest.fixture
def host(
    tmp_path: Path, prepared_host: PreparedHost, cpu_image: str, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    dirs = prepared_host.dirs(tmp_path / "host", "lem-svcfault")
    yield dirs
    compose_down(dirs.project)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return local_inventory(tmp_path / "inventory.yml")


def campaign_with_a_longer_first_window(tmp_path: Path) -> Path:
    """2 configs x 2 cycles; bs1's window is long enough to be hit while it measures."""
    campaign = tiny_campaign(CAMPAIGN)
    campaign["configs"][0]["measurement"]["min_window_seconds"] = 4.0
    return write_yaml(tmp_path / "campaign.yml", campaign)


def service_container(project: str) -> str:
    ids = subprocess.run(
        ["docker", "compose", "-p", project, "ps", "--quiet", "pytorch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(ids) == 1, ids
    return ids[0]


def test_a_killed_container_fails_its_experiment_the_service_comes_back_a_rerun_retries(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    campaign_file = campaign_with_a_longer_first_window(tmp_path)
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, host)

    with ControllerRun(inventory, variables, tmp_path) as run:
        wait_for(lambda: container_runs(host.project, FIRST), 600, f"{FIRST} to run", poll=0.1)
        subprocess.run(["docker", "kill", service_container(host.project)], check=True)
        first = run.finish()

    assert first.returncode != 0
    entries = manifest_entries(host.manifest(CAMPAIGN))
    assert {exp_id: e["status"] for exp_id, e in entries.items() if e["status"] != "completed"} == {
        FIRST: "failed"
    }
    assert "service 'pytorch' stopped during the experiment" in entries[FIRST]["error"]
    assert f"1 experiment(s) failed on localhost: {FIRST}" in first.output
    # The service was brought back before the next experiment, which completed.
    assert "TASK [lem_experiments : Restart the services pytorch]" in first.output
    assert entries[f"{CAMPAIGN}__bs2__c01"]["status"] == "completed"

    edit_yaml(campaign_file, {"failures": {"retry_failed_on_resume": False}})
    kept = run_campaign(inventory, variables, tmp_path)
    assert kept.returncode == 0, kept.output[-4000:]
    assert "lem: host=localhost 3 completed before, 0 to run, 1 failed (kept)" in kept.output
    assert manifest_entries(host.manifest(CAMPAIGN)) == entries

    edit_yaml(campaign_file, {"failures": {"retry_failed_on_resume": True}})
    retried = run_campaign(inventory, variables, tmp_path)
    assert retried.returncode == 0, retried.output[-4000:]
    final = assert_completed_exactly_once(host, CAMPAIGN, ALL)
    assert final[FIRST]["attempts"] == 2
    assert all(e["attempts"] == 1 for exp_id, e in final.items() if exp_id != FIRST)
    assert summary_counts(results, CAMPAIGN) == {"bs1": 2, "bs2": 2}


# -- the Docker daemon ---------------------------------------------------------------------


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def start_dockerd() -> None:
    """Start dockerd the way the product does (scripts/install-docker.sh, installing nothing)."""
    subprocess.run(
        [str(INSTALL_DOCKER)],
        env={**os.environ, "LEM_DOCKER_INSTALL": "0"},
        capture_output=True,
        check=True,
    )


def stop_dockerd() -> None:
    """SIGTERM dockerd (it stops its containers) and wait until it has exited."""
    pid = int(DOCKER_PIDFILE.read_text(encoding="ascii").strip())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 120, f"dockerd (pid {pid}) to exit")


def running_containers() -> set[str]:
    listing = subprocess.run(
        ["docker", "ps", "--quiet", "--no-trunc"], capture_output=True, text=True, check=True
    )
    return set(listing.stdout.split())


@pytest.fixture
def dockerd_restored() -> Iterator[None]:
    """Whatever happens in the test, the Docker daemon answers again afterwards, and the
    containers that ran before it (other work on a shared machine) run again."""
    before = running_containers()
    yield
    if not docker_answers():
        start_dockerd()
    stopped = before - running_containers()
    if stopped:
        subprocess.run(["docker", "start", *sorted(stopped)], capture_output=True, check=False)


def test_a_docker_daemon_restart_fails_clearly_and_a_rerun_completes(
    tmp_path: Path, host: HostDirs, inventory: Path, dockerd_restored: None
) -> None:
    campaign_file = campaign_with_a_longer_first_window(tmp_path)
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, host)

    with ControllerRun(inventory, variables, tmp_path) as run:
        wait_for(lambda: container_runs(host.project, FIRST), 600, f"{FIRST} to run", poll=0.1)
        stop_dockerd()
        start_dockerd()
        interrupted = run.finish()

    assert interrupted.returncode != 0
    entries = manifest_entries(host.manifest(CAMPAIGN))
    assert entries[FIRST]["status"] == "failed"
    assert "service 'pytorch' stopped during the experiment" in entries[FIRST]["error"]
    assert (
        "cfg=bs1 cycle=1 host=localhost FAILED: service 'pytorch' stopped during the experiment"
        in interrupted.output
    )

    rerun = run_campaign(inventory, variables, tmp_path)

    assert rerun.returncode == 0, rerun.output[-4000:]
    final = assert_completed_exactly_once(host, CAMPAIGN, ALL)
    assert final[FIRST]["attempts"] == 2
    assert summary_counts(results, CAMPAIGN) == {"bs1": 2, "bs2": 2}
