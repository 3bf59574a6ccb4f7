"""Faults of the controller (issue 5, items 1 and 7): `ansible-playbook` killed at several
points, and the campaign file edited between runs. Real ansible-playbook, real Docker,
the CPU image, one host (localhost) with everything under the test's tmp dir."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    container_runs,
    manifest_entries,
    read_json,
    run_campaign,
    tiny_campaign,
    wait_for,
    write_yaml,
)
from fixtures.faults import (
    NO_PIPELINING,
    ControllerRun,
    PreparedHost,
    assert_completed_exactly_once,
    campaign_vars,
    local_inventory,
    running_exp_id,
    state_dir,
    summary_counts,
)
from python_on_whales import DockerClient

from llenergymeasure.controller.plan import read_plan

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAMPAIGN = "ctlfault"
# Long enough for `long` to be hit while it measures...
LONG_WINDOW_SECONDS = 6.0
# ... and, where the next run must find it still running, for that run to read the
# manifest (a few seconds on an idle machine) with a wide margin for a loaded one.
LONGER_WINDOW_SECONDS = 30.0


@pytest.fixture
def host(
    tmp_path: Path, prepared_host: PreparedHost, cpu_image: str, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    dirs = prepared_host.dirs(tmp_path / "host", "lem-ctlfault")
    yield dirs
    compose_down(dirs.project)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return local_inventory(tmp_path / "inventory.yml")


def long_and_short_campaign(long_window: float = LONG_WINDOW_SECONDS) -> dict:
    """Two configs, one cycle: `long` measures for `long_window` seconds, `short` briefly."""
    campaign = tiny_campaign(CAMPAIGN, batch_sizes=(1, 2), cycles=1)
    long, short = campaign["configs"]
    long["config_name"], short["config_name"] = "long", "short"
    long["measurement"]["min_window_seconds"] = long_window
    return campaign


def exp(config: str, cycle: int = 1) -> str:
    return f"{CAMPAIGN}__{config}__c{cycle:02d}"


def started(result: dict) -> datetime:
    return datetime.fromisoformat(result["timing"]["started_at"])


def finished(result: dict) -> datetime:
    return datetime.fromisoformat(result["timing"]["finished_at"])


def test_machine_dies_during_planning_an_experiment_and_a_manifest_update_rerun_completes(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    """Kills of the whole process tree (the controller's machine dies) at three points."""
    campaign_file = write_yaml(tmp_path / "campaign.yml", long_and_short_campaign())
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, host)
    manifest, state = host.manifest(CAMPAIGN), state_dir(host, CAMPAIGN)

    # 1. While lem_plan runs: a plan file, if written at all, is whole. (Pipelining off:
    #    the module is then a file named after it, for find_module.)
    with ControllerRun(inventory, variables, tmp_path, env=NO_PIPELINING) as run:
        wait_for(lambda: run.find_module("lem_plan"), 120, "lem_plan to run", poll=0.01)
        run.kill_tree()
    plan_file = results / CAMPAIGN / "plan.json"
    if plan_file.exists():
        assert len(read_plan(plan_file).experiments) == 2
    assert not manifest.exists()

    # 2. While `long` is measured; the next run starts at once, its attempt still running.
    with ControllerRun(inventory, variables, tmp_path) as run:
        wait_for(lambda: running_exp_id(manifest) == exp("long"), 600, "long to run")
        wait_for(lambda: container_runs(host.project, exp("long")), 60, "long's exec")
        run.kill_tree()
    assert container_runs(host.project, exp("long")), "the attempt should outlive the controller"

    # 3. The re-run's `short`, after its result is written and before the manifest says so:
    #    its module is stopped (SIGSTOP) at the exec, then the whole tree is killed.
    with ControllerRun(inventory, variables, tmp_path) as run:
        wait_for(lambda: run.find(f"--exp-id {exp('short')}"), 600, "short's exec", poll=0.02)
        module = run.find_module("lem_experiment")
        assert module is not None
        os.kill(module, signal.SIGSTOP)
        short_result = state / "results" / exp("short") / "result.json"
        wait_for(short_result.exists, 300, f"{short_result}")
        assert manifest_entries(manifest)[exp("short")]["status"] == "running"
        rerun_output = run.output()
        run.kill_tree()

    assert "took over the run lock of ansible-playbook pid" in rerun_output
    final = run_campaign(inventory, variables, tmp_path)

    assert final.returncode == 0, final.output[-4000:]
    entries = assert_completed_exactly_once(host, CAMPAIGN, {exp("long"), exp("short")})
    assert {exp_id: e["attempts"] for exp_id, e in entries.items()} == {
        exp("long"): 2,
        exp("short"): 2,
    }
    for exp_id in (exp("long"), exp("short")):
        # The interrupted attempt's own output is set aside whole, never mixed in...
        earlier = read_json(state / "results" / f"{exp_id}.interrupted-1" / "result.json")
        latest = read_json(state / "results" / exp_id / "result.json")
        assert earlier["identity"]["exp_id"] == exp_id
        # ... and the attempts never measured at the same time.
        assert finished(earlier) <= started(latest), exp_id
    assert summary_counts(results, CAMPAIGN) == {"long": 1, "short": 1}
    assert read_json(results / CAMPAIGN / "hosts" / "localhost" / "manifest.json")["entries"] == (
        entries
    )
    assert (results / CAMPAIGN / "run.lock").read_bytes() == b""  # released at the end


def test_sigkill_of_the_main_process_the_rerun_waits_for_the_surviving_attempt(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    """A plain SIGKILL of ansible-playbook: its worker and module live on and record
    `long` themselves; the re-run started at once must not measure it a second time."""
    campaign_file = write_yaml(
        tmp_path / "campaign.yml", long_and_short_campaign(LONGER_WINDOW_SECONDS)
    )
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, host)
    manifest = host.manifest(CAMPAIGN)

    with ControllerRun(inventory, variables, tmp_path) as run:
        wait_for(lambda: running_exp_id(manifest) == exp("long"), 600, "long to run")
        module = wait_for(lambda: run.find_module("lem_experiment"), 60, "the module")
        run.kill_main()
        assert Path(f"/proc/{module}").exists(), "the module should outlive ansible-playbook"

        rerun = run_campaign(inventory, variables, tmp_path)

    assert rerun.returncode == 0, rerun.output[-4000:]
    # The re-run found `long` still running (interrupted, to run) and waited for it.
    assert "lem: host=localhost 0 completed before, 2 to run" in rerun.output
    entries = assert_completed_exactly_once(host, CAMPAIGN, {exp("long"), exp("short")})
    assert entries[exp("long")]["attempts"] == 1, entries
    assert not list((state_dir(host, CAMPAIGN) / "results").glob("*.interrupted-*"))
    assert summary_counts(results, CAMPAIGN) == {"long": 1, "short": 1}


def test_an_edited_campaign_reruns_only_the_changed_config_and_reports_it(
    tmp_path: Path, host: HostDirs, inventory: Path
) -> None:
    campaign = tiny_campaign(CAMPAIGN, cycles=1)
    campaign_file = write_yaml(tmp_path / "campaign.yml", campaign)
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, host)
    first = run_campaign(inventory, variables, tmp_path)
    assert first.returncode == 0, first.output[-4000:]
    before = manifest_entries(host.manifest(CAMPAIGN))
    unchanged_result = state_dir(host, CAMPAIGN) / "results" / exp("bs1") / "result.json"
    unchanged_bytes = unchanged_result.read_bytes()

    campaign["configs"][1]["decoder"]["max_new_tokens"] = 6
    write_yaml(campaign_file, campaign)
    second = run_campaign(inventory, variables, tmp_path)

    assert second.returncode == 0, second.output[-4000:]
    assert "configs changed (config hash differs): bs2" in second.output
    entries = assert_completed_exactly_once(host, CAMPAIGN, {exp("bs1"), exp("bs2")})
    assert entries[exp("bs1")] == before[exp("bs1")]  # kept, not run again
    assert unchanged_result.read_bytes() == unchanged_bytes
    changed = entries[exp("bs2")]
    assert changed["config_hash"] != before[exp("bs2")]["config_hash"]
    assert changed["attempts"] == 2
    rows = {
        row["config_name"]: row for row in read_json(results / CAMPAIGN / "summary.json")["rows"]
    }
    assert {name: row["n"] for name, row in rows.items()} == {"bs1": 1, "bs2": 1}
    assert rows["bs2"]["config_hash"] == changed["config_hash"]  # never mixed with the old one
