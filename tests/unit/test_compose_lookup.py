"""The service container look-up before a `docker exec` (dispatch/compose.py) gives up on
a docker CLI that hangs (a hung daemon), so that compose's exec runs under the caller's
timeout instead of the look-up blocking for ever. A stand-in `docker` that sleeps."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from llenergymeasure.dispatch import compose

HANGING_DOCKER = f"#!{sys.executable}\nimport time\ntime.sleep(600)\n"


def test_a_hanging_docker_lookup_gives_up_and_compose_exec_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = tmp_path / "docker"
    docker.write_text(HANGING_DOCKER)
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(compose, "LOOKUP_TIMEOUT_S", 0.5)
    project = compose.DockerCompose(["compose.yml"], "lem-test")

    assert project.running_container("pytorch") is None
    argv = project.command("exec", "--no-TTY", "pytorch", "lem", "worker", "--status")
    assert argv[:2] == ["docker", "compose"] and "exec" in argv
