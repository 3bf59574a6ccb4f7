"""The campaign's run lock when the controller play is reached over SSH (issue 10, item 6).

lem_plan holds the run lock for the `ansible-playbook` process above it. Reached over
SSH (even to localhost) there is none above it: the module must refuse, never plan
unlocked; and the campaign playbook runs it locally whatever the inventory says of
localhost, so a second run is refused there too. Real sshd (tests/fixtures/sshd.py),
real ansible-playbook; no Docker: everything is refused before any host task.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import run_campaign, tiny_campaign, write_yaml
from fixtures.sshd import SshServers, ssh_servers

from llenergymeasure.controller.runlock import acquire_run_lock

CAMPAIGN = "sshlock"
ADDRESS = "127.0.0.1"


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServers]:
    with ssh_servers(tmp_path_factory.mktemp("sshd"), (ADDRESS,)) as servers:
        yield servers


def over_ssh(servers: SshServers) -> dict[str, object]:
    """Inventory variables of a host that is this machine reached over SSH."""
    return {
        "ansible_connection": "ssh",
        "ansible_host": ADDRESS,
        "ansible_user": "root",
        "ansible_port": servers.port,
        "ansible_ssh_private_key_file": str(servers.client_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": sys.executable,  # has llenergymeasure
    }


@pytest.fixture
def other_run() -> Iterator[int]:
    """A live process that looks like another run's ansible-playbook (argv[0])."""
    process = subprocess.Popen(["bash", "-c", "exec -a ansible-playbook sleep 3600"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_lem_plan_reached_over_ssh_refuses_instead_of_planning_unlocked(
    tmp_path: Path, ssh_server: SshServers
) -> None:
    inventory = write_yaml(
        tmp_path / "inventory.yml", {"all": {"hosts": {"ctl": over_ssh(ssh_server)}}}
    )
    campaign_file = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN))
    results = tmp_path / "results"
    playbook = write_yaml(
        tmp_path / "plan-over-ssh.yml",
        [
            {
                "name": "Plan on a host reached over SSH",
                "hosts": "ctl",
                "gather_facts": False,
                "tasks": [
                    {
                        "name": "Plan",
                        "lem_plan": {
                            "campaign_file": str(campaign_file),
                            "hosts": ["ctl"],
                            "results_dir": str(results),
                        },
                    }
                ],
            }
        ],
    )

    run = run_campaign(inventory, {}, tmp_path, playbook=playbook)

    assert run.returncode != 0, run.output[-4000:]
    assert (
        f"{results / CAMPAIGN / 'run.lock'}: cannot take the run lock of campaign "
        f"'{CAMPAIGN}': no ansible-playbook process above this module" in run.output
    )
    assert not (results / CAMPAIGN / "plan.json").exists()


def test_the_campaign_playbook_locks_even_when_localhost_is_reached_over_ssh(
    tmp_path: Path, ssh_server: SshServers, other_run: int
) -> None:
    inventory = write_yaml(
        tmp_path / "inventory.yml", {"all": {"hosts": {"localhost": over_ssh(ssh_server)}}}
    )
    campaign_file = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN))
    results = tmp_path / "results"
    lock = results / CAMPAIGN / "run.lock"
    acquire_run_lock(lock, CAMPAIGN, other_run)
    held = lock.read_bytes()
    variables = {
        "lem_campaign_file": str(campaign_file),
        "lem_results_dir": str(results),
        "lem_host_state_root": str(tmp_path / "host" / "state"),
    }

    run = run_campaign(inventory, variables, tmp_path)

    assert run.returncode != 0, run.output[-4000:]
    assert (
        f"campaign '{CAMPAIGN}' is already being run by ansible-playbook pid {other_run}"
        in run.output
    )
    assert "TASK [lem_host" not in run.output  # refused before any host task
    assert lock.read_bytes() == held
    assert not (results / CAMPAIGN / "plan.json").exists()
    assert not (tmp_path / "host").exists()
