"""Docker Compose itself reads the rendered template as intended."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.compose import cpu_host_variables, render_compose
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker


ComposeFactory = Callable[..., list[str]]


@pytest.fixture
def compose_project(tmp_path: Path) -> Iterator[ComposeFactory]:
    """Render the template with given overrides; returns the `docker compose` argv prefix.

    Every project made is taken down afterwards (`run` leaves its network behind).
    """
    made: list[list[str]] = []

    def render(image: str, **overrides: Any) -> list[str]:
        (tmp_path / "state").mkdir(exist_ok=True)
        (tmp_path / "models").mkdir(exist_ok=True)
        project = f"lem-itest-{uuid.uuid4().hex[:10]}"
        variables = cpu_host_variables(
            project, image, tmp_path / "state", tmp_path / "models", **overrides
        )
        compose_file = tmp_path / f"{project}.yml"
        compose_file.write_text(render_compose(variables), encoding="utf-8")
        made.append(["docker", "compose", "-f", str(compose_file), "-p", project])
        return made[-1]

    yield render
    for compose in made:
        subprocess.run([*compose, "down", "--remove-orphans"], capture_output=True)


def compose_output(compose: list[str], *argv: str) -> str:
    return subprocess.run([*compose, *argv], capture_output=True, text=True, check=True).stdout


def test_environment_values_reach_the_container_as_data(
    docker_engine: DockerClient, cpu_image: str, compose_project: ComposeFactory
) -> None:
    hostile = "$(touch /tmp/pwned); ${HOME} \"q\" 'q' $$"
    compose = compose_project(cpu_image, lem_env={"LEM_NOTE": hostile})

    seen = compose_output(compose, "run", "--rm", "--no-TTY", "pytorch", "printenv", "LEM_NOTE")

    assert seen == hostile + "\n"


def test_gpu_lane_reservation_is_valid_compose(
    docker_engine: DockerClient, compose_project: ComposeFactory
) -> None:
    compose = compose_project("lem-pytorch:1", lem_gpu=True, lem_gpu_device_ids=["1"])

    service = json.loads(compose_output(compose, "config", "--format", "json"))["services"][
        "pytorch"
    ]

    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["device_ids"], device["capabilities"]) == (
        "nvidia",
        ["1"],
        ["gpu"],
    )
    assert service["ulimits"]["memlock"] == -1
