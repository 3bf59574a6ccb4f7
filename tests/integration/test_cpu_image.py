"""The CPU image, built offline, serving a compose project rendered from the template.

The project is what the Ansible role lem_services brings up: docker/compose.yml.j2
rendered with the same variables, `docker compose up --wait`, then experiments run
by `docker compose exec`.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures.compose import REPO, cpu_host_variables, render_compose
from python_on_whales import DockerClient

from llenergymeasure import __version__
from llenergymeasure.contracts.result import ExperimentResult

pytestmark = pytest.mark.docker

BASE_IMAGE = "lem-base:bookworm"
SERVICE = "pytorch"


def test_image_is_the_debootstrap_base_plus_cpu_torch_and_this_package(
    docker_engine: DockerClient, cpu_image: str
) -> None:
    image = docker_engine.image.inspect(cpu_image)
    base = docker_engine.image.inspect(image.config.labels["lem.base-image"])

    assert image.config.labels["lem.backend"] == "pytorch-cpu"
    assert base.repo_tags == [BASE_IMAGE]
    assert image.root_fs.layers[: len(base.root_fs.layers)] == base.root_fs.layers
    report = "import torch, llenergymeasure as m; print(torch.__version__, m.__version__)"
    versions = docker_engine.run(
        cpu_image, ["python", "-c", report], networks=["none"], remove=True
    )
    torch_version, lem_version = versions.split()
    assert torch_version.endswith("+cpu") and lem_version == __version__


def test_rebuild_with_nothing_changed_keeps_the_image(
    docker_engine: DockerClient, cpu_image: str
) -> None:
    before = docker_engine.image.inspect(cpu_image).id

    again = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True, check=True
    )

    assert again.stdout.strip() == cpu_image
    assert "up to date" in again.stderr
    assert docker_engine.image.inspect(cpu_image).id == before


def test_wheelhouse_rerun_needs_no_index(tmp_path: Path) -> None:
    wheelhouse = REPO / "wheelhouse" / "pytorch-cpu"
    script = [str(REPO / "scripts" / "build-wheelhouse.sh"), "pytorch-cpu", str(wheelhouse)]
    subprocess.run(script, capture_output=True, check=True)
    before = {path.name: path.stat().st_mtime_ns for path in wheelhouse.rglob("*")}
    # No pip configuration and an index that refuses connections: any download fails.
    offline = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    }

    rerun = subprocess.run(script, capture_output=True, text=True, env=offline)

    assert rerun.returncode == 0, rerun.stderr
    assert "nothing to download" in rerun.stderr
    assert "package wheel up to date" in rerun.stderr
    # Nothing rewritten: not a wheel, not the requirement files, not the package wheel.
    after = {path.name: path.stat().st_mtime_ns for path in wheelhouse.rglob("*")}
    assert after == before
    assert [p.name for p in (wheelhouse / "lem").glob("*.whl")] == [
        f"llenergymeasure-{__version__}-py3-none-any.whl"
    ]


@pytest.fixture
def service(docker_engine: DockerClient, cpu_image: str, tmp_path: Path) -> Iterator[DockerClient]:
    """A compose project from the template, up and healthy; taken down afterwards."""
    state_dir, models_dir = tmp_path / "state", tmp_path / "models"
    state_dir.mkdir()
    models_dir.mkdir()
    project = f"lem-itest-{uuid.uuid4().hex[:10]}"
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(
        render_compose(cpu_host_variables(project, cpu_image, state_dir, models_dir)),
        encoding="utf-8",
    )
    client = DockerClient(compose_files=[compose_file], compose_project_name=project)
    try:
        client.compose.up(detach=True, wait=True, quiet=True)
        yield client
    finally:
        client.compose.down(remove_orphans=True, volumes=True, timeout=5, quiet=True)


def test_service_is_healthy_and_runs_an_experiment(service: DockerClient, tmp_path: Path) -> None:
    (container,) = service.compose.ps()
    assert container.state.health.status == "healthy"
    config = {
        "config_name": "tiny-smoke",
        "backend": "pytorch",
        "model": {"path": "/lem/state/models/tiny"},
        "decoder": {"max_new_tokens": 8},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 4},
        "measurement": {"warmup_prompts": 1, "min_window_seconds": 1, "baseline_seconds": 0},
    }
    (tmp_path / "state" / "configs").mkdir()
    (tmp_path / "state" / "configs" / "tiny.yml").write_text(yaml.safe_dump(config))

    service.compose.execute(
        SERVICE, ["lem", "model", "tiny", "--out", "/lem/state/models/tiny"], tty=False
    )
    experiment = ["lem", "experiment", "/lem/state/configs/tiny.yml"]
    identity = ["--exp-id", "itest__tiny-smoke__c01", "--cycle", "1"]
    service.compose.execute(
        SERVICE, [*experiment, "--out", "/lem/state/results/x1", *identity], tty=False
    )

    result_file = tmp_path / "state" / "results" / "x1" / "result.json"
    result = ExperimentResult.model_validate(json.loads(result_file.read_text()))
    assert (result.identity.exp_id, result.identity.cycle) == ("itest__tiny-smoke__c01", 1)
    assert result.environment.device == "cpu"
    assert result.tokens.output_tokens > 0
    assert result.timing.window_seconds >= 1.0
    assert result.energy.source in ("rapl", "none")
    if result.energy.source == "none":
        assert result.energy.total_energy_j is None


def test_service_stops_on_sigterm_without_being_killed(service: DockerClient) -> None:
    (container,) = service.compose.ps()

    service.compose.stop(timeout=60)

    container.reload()
    # `lem worker` unloads and exits 0 on SIGTERM; 137 would mean Docker had to SIGKILL it.
    assert container.state.exit_code == 0
