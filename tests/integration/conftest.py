"""Session fixtures of the integration tests: the real Docker engine and the CPU image.

Docker is never optional here: `.ci/run` starts the engine (scripts/install-docker.sh),
so a missing engine is a failure with the reason, not a skip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.faults import PreparedHost, PrivateEngine, prepare_host, private_engine
from fixtures.shared import exclusive, made_once, run_root
from fixtures.shared_campaign import SharedCampaign, run_shared_campaign, teardown
from python_on_whales import DockerClient

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"
BASE_IMAGE = "lem-base:bookworm"  # scripts/build-base-image.sh's, the CPU image's base


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
def cpu_image(docker_engine: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tag of the CPU PyTorch image, built offline by scripts/build-images.sh.

    The script rebuilds only when the image's inputs changed, so this is quick
    when the image is current and always tests the code of this checkout.
    """
    # One worker at a time: scripts/test.sh built the image before pytest, so this is a
    # check, but a stale image is rebuilt here and two builds must not race.
    with exclusive(run_root(tmp_path_factory) / "build-images.lock"):
        build = subprocess.run(
            [str(BUILD_IMAGES), "--backend", "pytorch-cpu"], capture_output=True, text=True
        )
    if build.returncode != 0:
        pytest.fail(f"scripts/build-images.sh failed:\n{build.stderr[-4000:]}")
    return build.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def prepared_host(tmp_path_factory: pytest.TempPathFactory) -> PreparedHost:
    """A host venv and the tiny model, made once per run (all workers) for the campaign runs
    whose point is not a fresh install."""
    return made_once(
        tmp_path_factory,
        "prepared-host",
        prepare_host,
        encode=lambda host: {"venv": str(host.venv), "models": str(host.models)},
        decode=lambda data: PreparedHost(venv=Path(data["venv"]), models=Path(data["models"])),
    )


@pytest.fixture(scope="session")
def private_docker(
    tmp_path_factory: pytest.TempPathFactory, cpu_image: str
) -> Iterator[PrivateEngine]:
    """A dockerd of the tests' own, holding the CPU image and its base, for the tests that
    stop the engine or need one that differs from the machine's (mark them
    ON_PRIVATE_ENGINE). Its root is short: dockerd's socket paths are limited."""
    with private_engine(tmp_path_factory.mktemp("engine"), [cpu_image, BASE_IMAGE]) as engine:
        yield engine


@pytest.fixture(scope="session")
def shared_campaign(
    tmp_path_factory: pytest.TempPathFactory,
    prepared_host: PreparedHost,
    cpu_image: str,
    docker_engine: DockerClient,
) -> Iterator[SharedCampaign]:
    """One campaign run through its life once (tests/fixtures/shared_campaign.py) for the
    tests marked ON_SHARED_CAMPAIGN to read."""
    shared = run_shared_campaign(tmp_path_factory.mktemp("shared"), prepared_host)
    try:
        yield shared
    finally:
        teardown(shared)


# The heaviest groups, heaviest first (worker-seconds from `--durations`, 2 cores). Only the
# order matters: scripts/test.sh passes --no-loadscope-reorder, so xdist hands the groups out
# in collection order, and starting the long ones first keeps one worker from being left
# with a long group after the other has run out of work. Unlisted groups follow, then the
# unit tests, which fill the gaps at the end.
HEAVIEST_GROUPS = (
    "private-engine",  # about 390 s: image shipping, daemon restart, the engine itself
    "test_faults_controller",  # about 320 s
    "shared-campaign",  # about 300 s
    "test_server_mode",  # about 200 s: 6 GuideLLM runs against transformers serve
    "test_faults_container",  # about 150 s
    "test_worker_campaign",  # about 145 s
    "test_host_lock",  # about 130 s
    "test_molecule",  # about 125 s
    "test_faults_hosts",  # about 116 s
    "test_faults_disk",  # about 115 s
    "test_hung_worker",  # about 100 s
)


def group_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs.get("name")


def run_order(item: pytest.Item) -> int:
    """Lower runs earlier: listed heavy groups by weight, other integration tests, units."""
    group = group_of(item)
    if group in HEAVIEST_GROUPS:
        return HEAVIEST_GROUPS.index(group)
    return len(HEAVIEST_GROUPS) + (0 if group is not None else 1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, an integration module's tests run on one worker, so that
    its module-scoped set-up is made once; a test's own xdist_group mark wins. Then the
    heaviest groups go first (HEAVIEST_GROUPS); the sort is stable."""
    here = Path(__file__).parent
    for item in items:
        if item.path.parent == here and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items.sort(key=run_order)
