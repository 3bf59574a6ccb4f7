"""A server's lifecycle (runner/servers.py ServerProcess) with real processes: ready when
it lists its models, a server that exits or hangs is an error naming its exit and log."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.servers import ServerProcess


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ready_when_it_lists_models_and_stopped_whole(tmp_path: Path) -> None:
    # python's http.server answers GET /v1/models from a file: a stand-in OpenAI server
    (tmp_path / "site" / "v1").mkdir(parents=True)
    (tmp_path / "site" / "v1" / "models").write_text('{"data": []}')
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = ServerProcess(
        [*command, "--directory", str(tmp_path / "site")], port, tmp_path / "server.log"
    )
    server.start()
    try:
        server.wait_ready(30, poll_s=0.1)
        assert server.alive() and server.answers()
    finally:
        server.stop()
    assert not server.alive() and not server.answers()


def test_a_server_that_exits_fails_with_its_status_and_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('no such model'); sys.exit(3)"]
    server = ServerProcess(command, free_port(), tmp_path / "server.log")
    server.start()
    with pytest.raises(ExperimentError, match=r"exited: exit status 3; .*no such model"):
        server.wait_ready(30, poll_s=0.1)


def test_a_server_that_never_answers_fails_at_the_timeout(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('loading', flush=True); time.sleep(60)"]
    server = ServerProcess(command, free_port(), tmp_path / "server.log")
    server.start()
    try:
        with pytest.raises(ExperimentError, match=r"not ready after 1 s: still running; .*loading"):
            server.wait_ready(1, poll_s=0.1)
    finally:
        server.stop()
    assert not server.alive()


def test_a_missing_server_executable_is_named(tmp_path: Path) -> None:
    server = ServerProcess(["lem-no-such-server", "serve"], free_port(), tmp_path / "s.log")
    with pytest.raises(ExperimentError, match="lem-no-such-server is not installed in this image"):
        server.start()
