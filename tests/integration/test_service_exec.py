"""`DockerCompose`'s exec as `docker exec` into the service's running container.

A real compose project (the base image, sleeping): the exec reaches the container
compose would pick, with the environment by name only; a container recreated since is
found afresh (never the stale id); with the service stopped, compose runs the exec and
says why it cannot.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llenergymeasure.dispatch.compose import DockerCompose

pytestmark = pytest.mark.docker

SERVICE = "pytorch"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[DockerCompose]:
    """A running one-service project, taken down afterwards."""
    path = tmp_path / "compose.yml"
    service = {"image": "lem-base:bookworm", "command": ["sleep", "infinity"], "init": True}
    path.write_text(yaml.safe_dump({"services": {SERVICE: service}}), encoding="utf-8")
    compose = DockerCompose([str(path)], f"lem-itest-{uuid.uuid4().hex[:10]}")
    up = compose.command("up", "--detach", "--wait", "--pull", "never", SERVICE)
    subprocess.run(up, check=True, capture_output=True)
    try:
        yield compose
    finally:
        down = compose.command("down", "--timeout", "0")
        subprocess.run(down, check=False, capture_output=True)


def compose_container_id(compose: DockerCompose) -> str:
    ps = compose.command("ps", "--quiet", "--no-trunc", SERVICE)
    return subprocess.run(ps, check=True, capture_output=True, text=True).stdout.strip()


def test_exec_is_a_docker_exec_into_the_services_container(project: DockerCompose) -> None:
    argv = project.command("exec", "--no-TTY", "--env", "LEM_SECRET", SERVICE, "true")

    container = compose_container_id(project)
    assert argv == ["docker", "exec", "--interactive", "--env", "LEM_SECRET", container, "true"]


def test_exec_passes_environment_output_and_exit_status(project: DockerCompose) -> None:
    script = 'echo "$LEM_SECRET"; echo oops >&2; exit 75'
    args = ["exec", "--no-TTY", "--env", "LEM_SECRET", SERVICE, "sh", "-c", script]

    done = project.cli(args, env={"LEM_SECRET": "s3cret value"})

    assert (done.rc, done.stdout, done.stderr) == (75, "s3cret value\n", "oops\n")
    assert "s3cret value" not in project.command(*args)  # by name only, as compose does


def test_a_recreated_container_is_found_afresh(project: DockerCompose) -> None:
    before = project.command("exec", "--no-TTY", SERVICE, "true")[3]
    recreate = project.command("up", "--detach", "--wait", "--force-recreate", SERVICE)
    subprocess.run(recreate, check=True, capture_output=True)

    after = project.command("exec", "--no-TTY", SERVICE, "true")[3]

    assert after == compose_container_id(project) != before
    assert project.cli(["exec", "--no-TTY", SERVICE, "true"]).rc == 0


def test_a_stopped_service_is_left_to_compose_which_says_why(project: DockerCompose) -> None:
    subprocess.run(project.command("stop", "--timeout", "0"), check=True, capture_output=True)

    args = ["exec", "--no-TTY", SERVICE, "true"]
    done = project.cli(args)

    assert project.command(*args)[:2] == ["docker", "compose"]
    assert done.rc != 0 and "is not running" in done.stderr


def test_options_it_does_not_know_are_left_to_compose(project: DockerCompose) -> None:
    argv = project.command("exec", "--user", "root", SERVICE, "true")

    assert argv[:2] == ["docker", "compose"]
