"""A hung experiment mid-campaign (issue 10, point 1): real ansible-playbook, real Docker,
the CPU image. The service's `lem worker` is frozen (SIGSTOP, sent by the test to the
worker of the test's own container) while it measures the second of three experiments.

Past `lem_experiments_timeout`, the frozen experiment must be recorded failed, the
service restarted (the worker does not answer its liveness request), and the third
experiment must run on the fresh worker. The decision itself is unit-tested in
tests/unit/test_timeouts.py; the cooperative stop of a busy worker in
tests/unit/test_worker_cancel.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    manifest_entries,
    read_json,
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

CAMPAIGN = "hung"
TIMEOUT_S = 30  # lem_experiments_timeout: well above a tiny experiment on a loaded machine


@pytest.fixture
def host(
    tmp_path: Path, prepared_host: PreparedHost, cpu_image: str, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    dirs = prepared_host.dirs(tmp_path / "host", "lem-hung")
    yield dirs
    compose_down(dirs.project)


def exp(config: str) -> str:
    return f"{CAMPAIGN}__{config}__c01"


def three_configs() -> dict[str, Any]:
    """`before`, `frozen` (a window that never ends by itself) and `after`: one load key."""
    campaign = tiny_campaign(CAMPAIGN, batch_sizes=(1, 2, 4), cycles=1)
    for config, name in zip(campaign["configs"], ("before", "frozen", "after"), strict=True):
        config["config_name"] = name
    campaign["configs"][1]["measurement"]["min_window_seconds"] = 3600.0
    return campaign


def in_service(project: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-p", project, "exec", "-T", "pytorch", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


def worker_stats(project: str) -> dict[str, Any]:
    status = in_service(project, "lem", "worker", "--status")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def test_a_frozen_worker_mid_campaign_is_restarted_and_the_run_goes_on(
    tmp_path: Path, host: HostDirs
) -> None:
    campaign_file = write_yaml(tmp_path / "campaign.yml", three_configs())
    variables = campaign_vars(campaign_file, tmp_path / "results", host) | {
        "lem_experiments_timeout": TIMEOUT_S,
        "lem_services_keep": True,
    }
    manifest = host.manifest(CAMPAIGN)

    with ControllerRun(local_inventory(tmp_path / "inventory.yml"), variables, tmp_path) as run:
        wait_for(lambda: running_exp_id(manifest) == exp("frozen"), 600, "frozen to start")
        frozen_pid = worker_stats(host.project)["pid"]  # in the container's pid namespace
        freeze = in_service(host.project, "sh", "-c", 'kill -STOP "$1"', "sh", str(frozen_pid))
        assert freeze.returncode == 0, freeze.stderr
        done = run.finish()

    entries = manifest_entries(manifest)
    assert {name: entries[exp(name)]["status"] for name in ("before", "frozen", "after")} == {
        "before": "completed",
        "frozen": "failed",
        "after": "completed",
    }, done.output[-4000:]
    assert entries[exp("frozen")]["error"] == (
        f"timed out after {TIMEOUT_S} s: its worker did not answer (frozen); "
        "service 'pytorch' restarted"
    )
    assert done.returncode != 0  # the run reports its failed experiment
    assert f"1 experiment(s) failed on localhost: {exp('frozen')}" in done.output
    state = state_dir(host, CAMPAIGN)
    assert not (state / "results" / exp("frozen") / "result.json").exists()
    # `after` ran on a fresh worker: its first load, in a new process (the frozen one
    # held the same load key and would have reused it), and the only experiment there.
    after = read_json(state / entries[exp("after")]["result_path"])
    assert after["timing"]["model_reused"] is False
    assert after["timing"]["cold_start_method"] == "fresh_process"
    assert after["timing"]["runner"] == "worker"
    fresh = worker_stats(host.project)
    assert (fresh["experiments"], fresh["busy_with"]) == (1, None)
