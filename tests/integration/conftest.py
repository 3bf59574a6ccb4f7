"""Session fixtures of the integration tests: the real Docker engine and the CPU image.

Docker is never optional here: `.ci/run` starts the engine (scripts/install-docker.sh),
so a missing engine is a failure with the reason, not a skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fixtures.faults import PreparedHost, prepare_host
from python_on_whales import DockerClient

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"


@pytest.fixture(scope="session")
def docker_engine() -> DockerClient:
    """A client of the running Docker engine with Compose v2; fails when either is missing."""
    for argv, what in (
        (["docker", "info"], "the Docker engine does not answer"),
        (["docker", "compose", "version"], "Docker Compose v2 is not installed"),
    ):
        try:
            probe = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"{what} ({' '.join(argv)}: {exc}); run scripts/install-docker.sh")
        if probe.returncode != 0:
            reason = probe.stderr.strip().splitlines()[-1:] or ["no output"]
            pytest.fail(f"{what} ({' '.join(argv)}: {reason[0]}); run scripts/install-docker.sh")
    return DockerClient()


@pytest.fixture(scope="session")
def cpu_image(docker_engine: DockerClient) -> str:
    """Tag of the CPU PyTorch image, built offline by scripts/build-images.sh.

    The script rebuilds only when the image's inputs changed, so this is quick
    when the image is current and always tests the code of this checkout.
    """
    build = subprocess.run(
        [str(BUILD_IMAGES), "--backend", "pytorch-cpu"], capture_output=True, text=True
    )
    if build.returncode != 0:
        pytest.fail(f"scripts/build-images.sh failed:\n{build.stderr[-4000:]}")
    return build.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def prepared_host(tmp_path_factory: pytest.TempPathFactory) -> PreparedHost:
    """A host venv and the tiny model, made once for the fault tests' campaign runs."""
    return prepare_host(tmp_path_factory.mktemp("lem-prepared-host"))
