"""The offline image path: a host that lacks a service's image gets it from the controller.

The controller's Docker engine is a private dockerd (DOCKER_HOST for ansible-playbook,
so for the tasks delegated to localhost) holding the CPU image under a tag of this
test's own; the host, reached over SSH (a session does not inherit DOCKER_HOST), uses
the machine's engine, which lacks that tag. lem_services must find the image missing
(docker_image_info), export it on the controller (docker_image_export), copy it and
load it on the host (docker_image_load), and the campaign must then run on it.
A stand-in for scripts/build-images.sh prints the tag, as the real one does.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    manifest_entries,
    run_campaign,
    tiny_campaign,
    write_yaml,
)
from fixtures.faults import ON_PRIVATE_ENGINE, PrivateEngine
from fixtures.sshd import SshServers, ssh_inventory, ssh_servers
from python_on_whales import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ADDRESS = "127.0.0.2"
CAMPAIGN = "shiptest"


def system_docker(*argv: str) -> subprocess.CompletedProcess[str]:
    """A docker command on the machine's own engine, whatever DOCKER_HOST says."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", *argv], env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def controller_engine(
    private_docker: PrivateEngine, cpu_image: str
) -> Iterator[tuple[PrivateEngine, str]]:
    """The private engine, with the CPU image also tagged as `tag` (unknown to the host)."""
    tag = f"lem-shiptest-{uuid.uuid4().hex[:8]}:v1"
    engine = private_docker
    subprocess.run(["docker", "tag", cpu_image, tag], env=engine.env(), check=True)
    yield engine, tag
    # Only the tags: the CPU image keeps its own, on both engines.
    subprocess.run(["docker", "image", "rm", tag], env=engine.env(), check=False)
    system_docker("image", "rm", tag)


@pytest.fixture
def host(tmp_path: Path, docker_engine: DockerClient) -> Iterator[HostDirs]:
    dirs = HostDirs.fresh(tmp_path / "host", "lem-ship")
    yield dirs
    compose_down(dirs.project)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SshServers]:
    directory = tmp_path / "sshd"
    directory.mkdir()
    with ssh_servers(directory, (ADDRESS,)) as started:
        yield started


def build_images_stand_in(path: Path, tag: str) -> Path:
    path.write_text(f'#!/bin/sh\necho "build-images: {tag} is current" >&2\necho {tag}\n')
    path.chmod(0o755)
    return path


def one_experiment() -> dict:
    return tiny_campaign(CAMPAIGN, batch_sizes=(1,), cycles=1)


@ON_PRIVATE_ENGINE
def test_a_host_without_the_image_gets_it_from_the_controller(
    tmp_path: Path,
    controller_engine: tuple[PrivateEngine, str],
    host: HostDirs,
    server: SshServers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, tag = controller_engine
    assert system_docker("image", "inspect", tag).returncode != 0, "the host has the tag"
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    inventory = ssh_inventory(
        tmp_path / "inventory.yml", server, {"host-a": host}, {"host-a": ADDRESS}
    )
    archives = tmp_path / "archives"
    variables = {
        # One experiment: what is proved is that the shipped image runs the campaign.
        "lem_campaign_file": str(write_yaml(tmp_path / "campaign.yml", one_experiment())),
        "lem_results_dir": str(tmp_path / "results"),
        "lem_services_build_images_script": str(build_images_stand_in(tmp_path / "build", tag)),
        "lem_services_controller_image_dir": str(archives),
    }

    run = run_campaign(inventory, variables, tmp_path)
    (tmp_path / "run.log").write_text(run.output)  # evidence for the report

    assert run.returncode == 0, run.output[-6000:]
    # Exported on the controller, loaded on the host (the same image), the copy removed.
    assert [p.name for p in archives.iterdir()] == [tag.replace(":", "_") + ".tar"]
    loaded = system_docker("image", "inspect", "--format", "{{.Id}}", tag)
    assert loaded.returncode == 0, f"{tag} not loaded on the host: {loaded.stderr}"
    shipped = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
        env=engine.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout == shipped.stdout
    assert not list((host.root / "compose").glob("*.tar"))
    entries = manifest_entries(host.manifest(CAMPAIGN))
    assert [e["status"] for e in entries.values()] == ["completed"]
