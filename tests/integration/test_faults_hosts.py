"""One of two hosts becomes unreachable mid-campaign (issue 5, item 4).

Two inventory hosts over real SSH on 127.0.0.2 and 127.0.0.3, one sshd each (both
are this machine, sharing its Docker engine, each with its own compose project and
state directory). host-b's sshd is stopped, sessions included, once its first
experiment is reported: host-a finishes its share, the summary covers what completed
and names what did not run; once host-b's sshd is back, a re-run finishes the campaign,
and the two shares merge on the controller into one summary. (A fresh venv installed
over SSH is test_image_shipping.py's.)
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
    wait_for,
    write_yaml,
)
from fixtures.faults import (
    ControllerRun,
    PreparedHost,
    assert_completed_exactly_once,
    campaign_vars,
    summary_counts,
)
from fixtures.sshd import SshServers, ssh_inventory, ssh_servers
from python_on_whales import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ADDRESSES = {"host-a": "127.0.0.2", "host-b": "127.0.0.3"}
CAMPAIGN = "hostfault"


def exp(config: str, cycle: int) -> str:
    return f"{CAMPAIGN}__{config}__c{cycle:02d}"


# Round-robin by config: host-a runs both cycles of bs1, host-b both cycles of bs2.
SHARES = {
    "host-a": {exp("bs1", 1), exp("bs1", 2)},
    "host-b": {exp("bs2", 1), exp("bs2", 2)},
}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[SshServers]:
    directory = tmp_path / "sshd"
    directory.mkdir()
    with ssh_servers(directory, tuple(ADDRESSES.values())) as started:
        yield started


@pytest.fixture
def hosts(
    tmp_path: Path, prepared_host: PreparedHost, cpu_image: str, docker_engine: DockerClient
) -> Iterator[dict[str, HostDirs]]:
    dirs = {name: prepared_host.dirs(tmp_path / name, f"lem-{name}") for name in ADDRESSES}
    yield dirs
    for host in dirs.values():
        compose_down(host.project)


def test_an_unreachable_host_leaves_the_other_to_finish_and_a_rerun_completes(
    tmp_path: Path, servers: SshServers, hosts: dict[str, HostDirs]
) -> None:
    inventory = ssh_inventory(tmp_path / "inventory.yml", servers, hosts, ADDRESSES)
    campaign_file = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN))
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, *hosts.values())
    first_of_b = "cfg=bs2 cycle=1 host=host-b"

    with ControllerRun(inventory, variables, tmp_path) as run:
        # Once host-b's first result has reached the controller, host-b goes away.
        wait_for(lambda: first_of_b in run.output(), 900, "host-b's first experiment")
        servers.stop(ADDRESSES["host-b"])
        partial = run.finish()

    assert partial.returncode != 0
    recap = partial.recap()
    assert recap["host-b"]["unreachable"] >= 1, partial.output[-4000:]
    assert recap["host-a"]["failed"] == recap["host-a"]["unreachable"] == 0
    assert {e["status"] for e in manifest_entries(hosts["host-a"].manifest(CAMPAIGN)).values()} == {
        "completed"
    }
    # Result files reach the controller as files (docs/results.md): host-b's first result
    # stays on host-b until the re-run brings it, and the summary says what it lacks.
    summary = read_json(results / CAMPAIGN / "summary.json")
    assert {row["config_name"]: row["n"] for row in summary["rows"]} == {"bs1": 2}
    assert any(
        warning.startswith("host-b unreachable: 2 experiment(s) with no outcome on the controller")
        and exp("bs2", 1) in warning
        and exp("bs2", 2) in warning
        for warning in summary["warnings"]
    ), summary["warnings"]
    assert "3 completed, 0 failed, 1 not run (unreachable: host-b)" in partial.output
    assert manifest_entries(hosts["host-b"].manifest(CAMPAIGN))[exp("bs2", 1)]["status"] == (
        "completed"
    )

    servers.start(ADDRESSES["host-b"])
    rerun = run_campaign(inventory, variables, tmp_path)

    assert rerun.returncode == 0, rerun.output[-4000:]
    assert rerun.recap()["host-a"]["changed"] == 0  # finished work is left alone
    for name, host in hosts.items():
        assert_completed_exactly_once(host, CAMPAIGN, SHARES[name])
    assert summary_counts(results, CAMPAIGN) == {"bs1": 2, "bs2": 2}
    summary = read_json(results / CAMPAIGN / "summary.json")
    assert not [warning for warning in summary["warnings"] if "not run" in warning], summary
    # The two shares merged on the controller (what test_two_hosts_ssh.py checked): each
    # host's manifest fetched as it is on the host, each config's rows from its host's files.
    for name, host in hosts.items():
        fetched = read_json(results / CAMPAIGN / "hosts" / name / "manifest.json")
        assert fetched["entries"] == manifest_entries(host.manifest(CAMPAIGN))
    for row in summary["rows"]:
        host = {"bs1": "host-a", "bs2": "host-b"}[row["config_name"]]
        assert all(f"hosts/{host}/" in source for source in row["sources"]), row
