"""Faults of the backend service (issue 5, items 2 and 3): its container killed during an
experiment, and the Docker daemon restarted during a campaign (a private engine of the
test's own: issue 10, item 9). Real ansible-playbook, real Docker, the CPU image,
localhost."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import (
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
    ON_PRIVATE_ENGINE,
    ControllerRun,
    PreparedHost,
    PrivateEngine,
    assert_completed_exactly_once,
    campaign_vars,
    edit_yaml,
    local_inventory,
    running_exp_id,
    summary_counts,
)
from python_on_whales import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAMPAIGN = "svcfault"
ALL = {f"{CAMPAIGN}__bs{b}__c{c:02d}" for b in (1, 2) for c in (1, 2)}
FIRST = f"{CAMPAIGN}__bs1__c01"  # interleaved order: bs1 c1, bs2 c1, bs1 c2, bs2 c2


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
    # The failed task's health check restarted the service (its JSON is in the output),
    # and the next experiment completed.
    assert '"when": "after the failure"' in first.output
    assert '"restarted": true' in first.output
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
# Stopped and started again under a running campaign: a private engine of the test's own
# (tests/fixtures/faults.py), never the machine's, whose containers belong to others too.

BASE_IMAGE = "lem-base:bookworm"  # scripts/build-base-image.sh's: the CPU image's inputs hash


def system_docker(*args: str, check: bool = True) -> str:
    """A docker command on the machine's own engine, whatever DOCKER_HOST says."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check)
    return done.stdout.strip()


@pytest.fixture
def system_sentinel() -> Iterator[str]:
    """A container of this test on the machine's engine: still running at the end with the
    same start time, it shows that engine was neither stopped nor restarted."""
    sentinel = system_docker(
        "run", "--detach", "--rm", "--network", "none", BASE_IMAGE, "sleep", "infinity"
    )
    try:
        yield sentinel
    finally:
        system_docker("rm", "--force", sentinel, check=False)


def started(container: str) -> str:
    return system_docker(
        "inspect", "--format", "{{.State.Running}} {{.State.StartedAt}}", container
    )


@pytest.fixture
def engine(private_docker: PrivateEngine) -> PrivateEngine:
    return private_docker


@pytest.fixture
def engine_host(
    tmp_path: Path,
    prepared_host: PreparedHost,
    engine: PrivateEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[HostDirs]:
    """A host whose services run on the private engine: DOCKER_HOST for the playbook (its
    modules, compose, build-images.sh) and for this test's own docker commands."""
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    dirs = prepared_host.dirs(tmp_path / "host", "lem-svcfault")
    yield dirs
    compose_down(dirs.project)


@ON_PRIVATE_ENGINE
def test_a_docker_daemon_restart_fails_clearly_and_a_rerun_completes(
    tmp_path: Path,
    engine: PrivateEngine,
    engine_host: HostDirs,
    inventory: Path,
    system_sentinel: str,
) -> None:
    sentinel_before = started(system_sentinel)
    campaign_file = campaign_with_a_longer_first_window(tmp_path)
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, engine_host)

    with ControllerRun(inventory, variables, tmp_path) as run:
        # the manifest, not `docker compose top`: the engine is the test's, the file the host's
        wait_for(
            lambda: running_exp_id(engine_host.manifest(CAMPAIGN)) == FIRST,
            600,
            f"{FIRST} to run",
            poll=0.1,
        )
        engine.stop()
        engine.start()
        interrupted = run.finish()

    assert interrupted.returncode != 0
    entries = manifest_entries(engine_host.manifest(CAMPAIGN))
    assert entries[FIRST]["status"] == "failed"
    assert "service 'pytorch' stopped during the experiment" in entries[FIRST]["error"]
    assert (
        "cfg=bs1 cycle=1 host=localhost FAILED: service 'pytorch' stopped during the experiment"
        in interrupted.output
    )

    rerun = run_campaign(inventory, variables, tmp_path)

    assert rerun.returncode == 0, rerun.output[-4000:]
    final = assert_completed_exactly_once(engine_host, CAMPAIGN, ALL)
    assert final[FIRST]["attempts"] == 2
    assert summary_counts(results, CAMPAIGN) == {"bs1": 2, "bs2": 2}
    assert sentinel_before.startswith("true ")
    assert started(system_sentinel) == sentinel_before  # the machine's engine never stopped
