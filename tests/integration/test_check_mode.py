"""`ansible-playbook --check` of the campaign: it runs through and changes nothing.

The real campaign playbook in check mode, localhost over the local connection as
inventory/local.yml has it, every host path (state, venv, wheelhouse, models,
compose files) under the test's tmp dir, a compose project name no run used; the
demo's tiny CPU campaign. On a host that never ran the campaign, and on one that ran
its first cycle, it must run to the end, say what it would run, and change nothing:
no file on the host, nothing in Docker (containers, networks, volumes, images),
nothing on the controller (results, run lock, the image and wheel caches under
wheelhouse/).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    experiment_results,
    run_campaign,
    tiny_campaign,
    write_yaml,
)
from fixtures.shared_campaign import (
    ON_SHARED_CAMPAIGN,
    SharedCampaign,
    campaign_caches,
    docker_state,
    tree_state,
)
from fixtures.shared_campaign import exp_id as shared_exp_id
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

CAMPAIGN = "checktest"
EXPERIMENTS = [f"{CAMPAIGN}__bs{bs}__c{cycle:02d}" for cycle in (1, 2) for bs in (1, 2)]


@pytest.fixture
def host(tmp_path: Path, docker_engine: DockerClient) -> Iterator[HostDirs]:
    """Every path of the host under one directory, which the run must not create."""
    dirs = HostDirs.fresh(tmp_path / "host", "lem-check")
    yield dirs
    compose_down(dirs.project)  # only does something when the test is failing


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """The demo's host: localhost, the tiny model made when missing."""
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "lem_services_tiny_model": True,
    }
    return write_yaml(tmp_path / "inventory.yml", {"all": {"hosts": {"localhost": host_vars}}})


def campaign_variables(tmp_path: Path, host: HostDirs, campaign: dict[str, Any]) -> dict[str, Any]:
    return {
        **host.variables(),
        "lem_campaign_file": str(write_yaml(tmp_path / "campaign.yml", campaign)),
        "lem_results_dir": str(tmp_path / "results"),
    }


def test_check_on_a_fresh_host_runs_through_and_changes_nothing(
    tmp_path: Path, host: HostDirs, inventory: Path, docker_engine: DockerClient
) -> None:
    variables = campaign_variables(tmp_path, host, tiny_campaign(CAMPAIGN))
    results = tmp_path / "results"
    controller_caches = campaign_caches()
    docker_before = docker_state(docker_engine, host.project)

    run = run_campaign(inventory, variables, tmp_path, options=["--check"])

    assert run.returncode == 0, run.output[-6000:]
    assert run.recap()["localhost"]["failed"] == 0, run.output[-6000:]
    # Nothing on the host or the controller: not even a directory (results/<campaign>/
    # would hold plan.json and the run lock), nor a cached wheel or image archive.
    assert not host.root.exists(), sorted(tree_state(host.root))
    assert not results.exists(), sorted(tree_state(results))
    assert campaign_caches() == controller_caches
    # Nothing in Docker: no container, network or volume of the project, no image
    # built or loaded.
    assert docker_state(docker_engine, host.project) == docker_before
    # What it would do is said: the plan, and every experiment as one it would run.
    assert "new plan written (4 experiments) [dry run: nothing written]" in run.output
    would_run = run.output.rpartition("would run 4 experiment(s)")[2].partition("\n")[0]
    assert [e for e in EXPERIMENTS if e in would_run] == EXPERIMENTS, run.output[-6000:]


@ON_SHARED_CAMPAIGN
def test_check_on_a_host_that_ran_the_first_cycle_reports_the_second_pending(
    shared_campaign: SharedCampaign,
) -> None:
    """Where the host is set up, lem_experiment itself says what would run (the session's
    shared campaign: cycle 1 ran, the file grew to 2 cycles, then `--check -v`)."""
    shared = shared_campaign
    assert shared.first.returncode == 0, shared.first.output[-6000:]
    run = shared.check

    assert run.returncode == 0, run.output[-6000:]
    assert run.recap()["localhost"]["failed"] == 0, run.output[-6000:]
    # Nothing on the host (files, containers, networks, volumes, images) or the
    # controller (results, run lock, wheelhouse) changed.
    assert shared.after_check == shared.before_check
    # The first cycle is finished work; lem_experiment reports the second as pending,
    # new, not run.
    reported = experiment_results(run.output)
    second_cycle = [shared_exp_id(config, 2) for config in ("bs1", "bs2", "hostile")]
    assert sorted(reported) == sorted(second_cycle), run.output[-6000:]
    for exp_id in second_cycle:
        assert reported[exp_id]["status"] == "pending", reported[exp_id]
        assert reported[exp_id]["reason"] == "new", reported[exp_id]
        assert reported[exp_id]["attempts"] == 0, reported[exp_id]
