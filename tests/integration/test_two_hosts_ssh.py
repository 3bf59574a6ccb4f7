"""One campaign on two inventory hosts reached over SSH (issue 4, item 9).

The test starts its own sshd on 127.0.0.2 and 127.0.0.3 (a free port, a host key
and an authorized key it makes in a tmp dir). Both "hosts" are this machine: they
share its Docker engine, each with its own compose project, state, venv and models
directories, so the playbook runs the real remote path: modules over SSH, a venv
installed from the controller's wheelhouse, services per host.
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
    unique_name,
    write_yaml,
)
from fixtures.sshd import SshServers, ssh_inventory, ssh_servers
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

ADDRESSES = {"host-a": "127.0.0.2", "host-b": "127.0.0.3"}
CAMPAIGN = "sshtest"


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServers]:
    with ssh_servers(tmp_path_factory.mktemp("sshd"), tuple(ADDRESSES.values())) as servers:
        yield servers


@pytest.fixture
def hosts(tmp_path: Path, docker_engine: DockerClient) -> Iterator[dict[str, HostDirs]]:
    dirs = {
        name: HostDirs(
            root=tmp_path / name,
            project=unique_name(f"lem-ssh-{name}"),
            venv=tmp_path / name / "venv",
            models=tmp_path / name / "models",
        )
        for name in ADDRESSES
    }
    yield dirs
    for host in dirs.values():
        compose_down(host.project)


def test_campaign_splits_between_two_ssh_hosts_and_merges_the_summary(
    tmp_path: Path, ssh_server: SshServers, hosts: dict[str, HostDirs]
) -> None:
    inventory = ssh_inventory(tmp_path / "inventory.yml", ssh_server, hosts, ADDRESSES)
    campaign_file = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN))
    results = tmp_path / "results" / CAMPAIGN

    run = run_campaign(
        inventory,
        {"lem_campaign_file": str(campaign_file), "lem_results_dir": str(tmp_path / "results")},
        tmp_path,
    )

    assert run.returncode == 0, run.output[-6000:]
    assert set(run.recap()) >= set(ADDRESSES), run.output[-3000:]
    shares = {name: manifest_entries(host.manifest(CAMPAIGN)) for name, host in hosts.items()}
    # Round-robin by config: each host ran both cycles of one config.
    configs_run = {
        name: {e["config_name"] for e in share.values()} for name, share in shares.items()
    }
    assert configs_run == {"host-a": {"bs1"}, "host-b": {"bs2"}}
    for share in shares.values():
        assert [e["status"] for e in share.values()] == ["completed", "completed"]
    for name in ADDRESSES:
        fetched = read_json(results / "hosts" / name / "manifest.json")
        assert fetched["entries"] == shares[name]

    rows = {row["config_name"]: row for row in read_json(results / "summary.json")["rows"]}
    assert sorted(rows) == ["bs1", "bs2"]
    for config, host in (("bs1", "host-a"), ("bs2", "host-b")):
        assert rows[config]["n"] == 2
        assert all(f"/hosts/{host}/" in source for source in rows[config]["sources"])
