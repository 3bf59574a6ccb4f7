"""The campaign playbook end to end: real ansible-playbook, real Docker, the CPU image.

One host (localhost over the local connection, as inventory/local.yml describes it),
everything it writes under the test's tmp dir, its own compose project.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    container_runs,
    kill_controller,
    manifest_entries,
    read_json,
    run_campaign,
    running_campaign,
    tiny_campaign,
    unique_name,
    wait_for,
    write_yaml,
)
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

CAMPAIGN = "pbtest"
EXPERIMENTS = 4  # 2 configs x 2 cycles


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A venv and a models dir for the module's runs: the role installs and fills them once."""
    root = tmp_path_factory.mktemp("lem-host")
    return root / "venv", root / "models"


@pytest.fixture
def host(
    tmp_path: Path, shared_dirs: tuple[Path, Path], docker_engine: DockerClient
) -> Iterator[HostDirs]:
    venv, models = shared_dirs
    dirs = HostDirs(
        root=tmp_path / "host", project=unique_name("lem-pbtest"), venv=venv, models=models
    )
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


def test_second_run_changes_nothing_and_writes_the_same_summary(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    variables = campaign_vars(tmp_path, host, tiny_campaign(CAMPAIGN))
    summary = tmp_path / "results" / CAMPAIGN / "summary.json"

    first = run_campaign(inventory, variables, tmp_path)
    assert first.returncode == 0, first.output[-4000:]
    assert_completed_once(manifest_entries(host.manifest(CAMPAIGN)), EXPERIMENTS)
    first_summary = summary.read_bytes()
    rows = read_json(summary)["rows"]
    assert sorted(row["config_name"] for row in rows) == ["bs1", "bs2"]
    assert all(row["n"] == 2 for row in rows)

    second = run_campaign(inventory, variables, tmp_path)
    assert second.returncode == 0, second.output[-4000:]
    assert second.recap()["localhost"]["changed"] == 0, second.output[-4000:]
    assert summary.read_bytes() == first_summary
    # Finished work is not touched: no service came up, no experiment ran.
    assert "TASK [lem_services" not in second.output
    assert "TASK [lem_experiments" not in second.output
    fetched = tmp_path / "results" / CAMPAIGN / "hosts" / "localhost" / "manifest.json"
    assert read_json(fetched)["entries"] == manifest_entries(host.manifest(CAMPAIGN))


def test_sigkill_during_an_experiment_then_rerun_completes_each_experiment_once(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    variables = campaign_vars(tmp_path, host, tiny_campaign(CAMPAIGN))
    manifest = host.manifest(CAMPAIGN)

    def running_entry() -> str | None:
        entries = manifest_entries(manifest)
        return next((exp_id for exp_id, e in entries.items() if e["status"] == "running"), None)

    with running_campaign(inventory, variables, tmp_path) as playbook:
        interrupted = wait_for(running_entry, timeout=900, what=f"a running entry in {manifest}")
        kill_controller(playbook)

    # The exec'd `lem experiment` outlives the controller in the container: let it end
    # so that the re-run measures on a quiet machine.
    wait_for(
        lambda: not container_runs(host.project, "lem experiment"),
        timeout=300,
        what="the orphaned experiment to end",
    )
    assert manifest_entries(manifest)[interrupted]["status"] == "running"

    rerun = run_campaign(inventory, variables, tmp_path)
    assert rerun.returncode == 0, rerun.output[-4000:]
    entries = manifest_entries(manifest)
    assert_completed_once(entries, EXPERIMENTS)
    assert entries[interrupted]["attempts"] == 2
    others = {exp_id: e["attempts"] for exp_id, e in entries.items() if exp_id != interrupted}
    assert set(others.values()) == {1}, others
    summary = read_json(tmp_path / "results" / CAMPAIGN / "summary.json")
    assert sum(row["n"] for row in summary["rows"]) == EXPERIMENTS


def test_invalid_campaign_fails_in_the_controller_play_before_any_host_task(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    campaign = tiny_campaign(CAMPAIGN)
    campaign["execution"]["cycels"] = 3
    variables = campaign_vars(tmp_path, host, campaign)

    run = run_campaign(inventory, variables, tmp_path)

    assert run.returncode != 0
    campaign_file = variables["lem_campaign_file"]
    assert f"{campaign_file}: execution.cycels: unknown key (value 3)" in run.output
    assert "lem_host :" not in run.output  # no task of the host plays ran
    assert run.recap()["localhost"]["failed"] == 1
    assert not (tmp_path / "results" / CAMPAIGN).exists()
    assert not (host.root / "state").exists()


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
