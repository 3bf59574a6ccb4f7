"""The campaign playbook end to end: real ansible-playbook, real Docker, the CPU image.

One host (localhost over the local connection, as inventory/local.yml describes it),
everything it writes under the test's tmp dir, its own compose project. A controller
killed during an experiment is test_faults_controller.py's (its first test checks the
re-run more strictly: each experiment once, its result from its last attempt); an
invalid campaign is test_hostile_input_playbook.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    manifest_entries,
    read_json,
    run_campaign,
    tiny_campaign,
    write_yaml,
)
from fixtures.faults import PreparedHost
from fixtures.shared_campaign import CAMPAIGN as SHARED
from fixtures.shared_campaign import ON_SHARED_CAMPAIGN, SharedCampaign
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

CAMPAIGN = "pbtest"
EXPERIMENTS = 4  # 2 configs x 2 cycles


@pytest.fixture
def host(
    tmp_path: Path, prepared_host: PreparedHost, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    """The session's venv and models: a fresh install is not what these tests prove."""
    dirs = prepared_host.dirs(tmp_path / "host", "lem-pbtest")
    yield dirs
    compose_down(dirs.project)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_yaml(
        tmp_path / "inventory.yml",
        {
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                        "lem_services_tiny_model": True,
                    }
                }
            }
        },
    )


def campaign_vars(tmp_path: Path, host: HostDirs, campaign: dict) -> dict:
    campaign_file = write_yaml(tmp_path / "campaign.yml", campaign)
    return {
        **host.variables(),
        "lem_campaign_file": str(campaign_file),
        "lem_results_dir": str(tmp_path / "results"),
    }


def assert_completed_once(manifest: dict[str, dict], expected: int) -> None:
    assert len(manifest) == expected
    assert {entry["status"] for entry in manifest.values()} == {"completed"}


@ON_SHARED_CAMPAIGN
def test_second_run_changes_nothing_and_writes_the_same_summary(
    shared_campaign: SharedCampaign,
) -> None:
    """The session's shared campaign (3 configs x 2 cycles) run to its end, then again."""
    shared = shared_campaign
    summary = shared.results / "summary.json"

    assert shared.second.returncode == 0, shared.second.output[-4000:]
    assert_completed_once(manifest_entries(shared.host.manifest(SHARED)), 6)
    rows = read_json(summary)["rows"]
    assert sorted(row["config_name"] for row in rows) == ["bs1", "bs2", "hostile"]
    assert all(row["n"] == 2 for row in rows)

    third = shared.third
    assert third.returncode == 0, third.output[-4000:]
    assert third.recap()["localhost"]["changed"] == 0, third.output[-4000:]
    assert summary.read_bytes() == shared.summary_after_second
    # Finished work is not touched: no service came up, no experiment ran.
    assert "TASK [lem_services" not in third.output
    assert "TASK [lem_experiments" not in third.output
    fetched = shared.results / "hosts" / "localhost" / "manifest.json"
    assert read_json(fetched)["entries"] == manifest_entries(shared.host.manifest(SHARED))


def test_failed_experiments_are_recorded_and_the_campaign_goes_on(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    campaign = tiny_campaign(CAMPAIGN)
    broken = campaign["configs"][0]
    broken["config_name"] = "no-model"
    broken["model"] = {"path": "/models/not-there"}
    variables = campaign_vars(tmp_path, host, campaign)

    run = run_campaign(inventory, variables, tmp_path)

    assert run.returncode != 0
    assert run.recap()["localhost"]["failed"] == 1
    assert "2 experiment(s) failed on localhost" in run.output
    entries = manifest_entries(host.manifest(CAMPAIGN))
    statuses = {exp_id: entry["status"] for exp_id, entry in entries.items()}
    assert statuses == {
        f"{CAMPAIGN}__no-model__c01": "failed",
        f"{CAMPAIGN}__no-model__c02": "failed",
        f"{CAMPAIGN}__bs2__c01": "completed",
        f"{CAMPAIGN}__bs2__c02": "completed",
    }
    assert all("/models/not-there" in entries[e]["error"] for e in statuses if "no-model" in e)
    rows = read_json(tmp_path / "results" / CAMPAIGN / "summary.json")["rows"]
    assert [(row["config_name"], row["n"]) for row in rows] == [("bs2", 2)]
