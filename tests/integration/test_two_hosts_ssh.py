"""One campaign on two inventory hosts reached over SSH (issue 4, item 9).

The test starts its own sshd on 127.0.0.2 and 127.0.0.3 (a free port, a host key
and an authorized key it makes in a tmp dir). Both "hosts" are this machine: they
share its Docker engine, each with its own compose project, state, venv and models
directories, so the playbook runs the real remote path: modules over SSH, a venv
installed from the controller's wheelhouse, services per host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
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
    wait_for,
    write_yaml,
)
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

SSHD = Path("/usr/sbin/sshd")
ADDRESSES = {"host-a": "127.0.0.2", "host-b": "127.0.0.3"}
CAMPAIGN = "sshtest"


@dataclass(frozen=True)
class SshServer:
    port: int
    client_key: Path


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def accepts_connections(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def sshd_config(directory: Path, port: int) -> Path:
    lines = [
        f"Port {port}",
        *(f"ListenAddress {address}" for address in ADDRESSES.values()),
        f"HostKey {directory / 'host_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"PidFile {directory / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The tmp dir's permissions are pytest's, not sshd's to judge.
        "StrictModes no",
        "MaxSessions 50",
        "MaxStartups 50",
    ]
    return write_text(directory / "sshd_config", "\n".join(lines) + "\n")


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if os.geteuid() != 0:
        pytest.fail("the two-host SSH test runs sshd and logs in as root: run it as root")
    directory = tmp_path_factory.mktemp("sshd")
    keygen(directory / "host_key")
    keygen(directory / "client_key")
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    port = free_port(ADDRESSES["host-a"])
    # sshd refuses to start without its privilege separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (directory / "sshd.log").open("w")
    server = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(sshd_config(directory, port))],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: all(accepts_connections(a, port) for a in ADDRESSES.values()),
            timeout=30,
            what=f"sshd on port {port} (log: {directory / 'sshd.log'})",
        )
        yield SshServer(port=port, client_key=directory / "client_key")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


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


def ssh_inventory(path: Path, server: SshServer, hosts: dict[str, HostDirs]) -> Path:
    return write_yaml(
        path,
        {
            "all": {
                "hosts": {
                    name: {"ansible_host": ADDRESSES[name], **host.variables()}
                    for name, host in hosts.items()
                },
                "vars": {
                    "ansible_connection": "ssh",
                    "ansible_user": "root",
                    "ansible_port": server.port,
                    "ansible_ssh_private_key_file": str(server.client_key),
                    "ansible_ssh_common_args": (
                        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                    ),
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "lem_services_tiny_model": True,
                },
            }
        },
    )


def test_campaign_splits_between_two_ssh_hosts_and_merges_the_summary(
    tmp_path: Path, ssh_server: SshServer, hosts: dict[str, HostDirs]
) -> None:
    inventory = ssh_inventory(tmp_path / "inventory.yml", ssh_server, hosts)
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
