"""The worker's server lifecycle in server mode (runner/worker.py), with stand-ins for the
two executables it runs: `transformers` (a real HTTP server process answering
/v1/models) and `guidellm` (one that kills that server mid-load, as a crash would).

The full path with the real `transformers serve` and GuideLLM runs in
tests/integration/test_server_mode.py; here, the server's lifecycle (kept for one load key,
stopped for another, for an offline config, a cold start, a GPU hand-over and the worker's
stop) and the failure path: the experiment fails naming the cause, the worker keeps
serving, and the next experiment starts a fresh server.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.loader import parse_experiment
from llenergymeasure.contracts.wire import Done, Failed, Progress, RunRequest
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner import worker as worker_module
from llenergymeasure.runner.experiment import RunIdentity, run_experiment
from llenergymeasure.runner.worker import Worker

STAND_IN_SERVER = """#!{python}
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
open(os.environ["LEM_TEST_SERVER_PIDS"], "a").write(f"{{os.getpid()}}\\n")

class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{{"data": []}}')

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
"""

# Kills the newest stand-in server, as a crash during the load would, and fails.
STAND_IN_GENERATOR = """#!{python}
import os, signal, sys
pid = int(open(os.environ["LEM_TEST_SERVER_PIDS"]).read().split()[-1])
os.kill(pid, signal.SIGKILL)
sys.exit(3)
"""


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Both stand-ins first on PATH; the file their server pids are appended to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("transformers", STAND_IN_SERVER), ("guidellm", STAND_IN_GENERATOR)):
        script = bin_dir / name
        script.write_text(text.format(python=sys.executable))
        script.chmod(0o755)
    pids = tmp_path / "server-pids"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LEM_TEST_SERVER_PIDS", str(pids))
    monkeypatch.setattr(worker_module, "SERVER_DIR", tmp_path / "server")
    # A port of this test's own: tests on the other xdist worker run stand-ins too, and a
    # server of theirs on the same port would answer for ours.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setattr(worker_module, "DEFAULT_PORT", probe.getsockname()[1])
    yield pids


def server_config(rate: float = 4.0, precision: str = "float32") -> dict[str, Any]:
    return {
        "config_name": "served",
        "backend": "pytorch",
        "model": {"path": "/models/tiny"},
        "precision": precision,
        "load": {"mode": "server", "request_rate": rate, "num_requests": 4, "warmup_requests": 1},
    }


def server_request(out_dir: Path) -> RunRequest:
    return RunRequest(config=server_config(), config_source="test", out_dir=str(out_dir))


def alive(pid: int) -> bool:
    """Whether stand-in server `pid` still runs (a stopped one is reaped by its Popen)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_server_is_kept_for_its_load_key_and_stopped_for_anything_else(
    stand_ins: Path,
) -> None:
    worker = Worker()
    stages: list[str] = []

    def emit(progress: Progress) -> None:
        stages.append(progress.stage)

    def serve(config: dict[str, Any], cold_start: bool = False) -> int:
        server, _ = worker.ensure_server(parse_experiment(config, "test"), cold_start, emit)
        assert server.process is not None
        return server.process.pid

    try:
        first = serve(server_config(rate=4.0))
        assert serve(server_config(rate=8.0)) == first and stages[-1] == "reusing"  # a rate sweep
        other_key = serve(server_config(precision="bfloat16"))
        assert other_key != first and not alive(first)
        cold = serve(server_config(precision="bfloat16"), cold_start=True)
        assert cold != other_key and not alive(other_key)
        offline = parse_experiment({**server_config(), "load": {"mode": "offline"}}, "test")
        worker.make_room(offline, False, emit)  # before an offline config loads in-process
        assert worker.server is None and not alive(cold)
        handed_over = serve(server_config())
        worker.release(emit)  # lem release: the GPU goes to another service
        assert worker.server is None and not alive(handed_over)
        last = serve(server_config())
    finally:
        assert worker.stop()
    assert worker.server is None and not alive(last)
    assert len(stand_ins.read_text().split()) == 5  # every start a server of its own


def test_a_server_that_dies_fails_its_experiment_and_the_next_starts_a_fresh_one(
    stand_ins: Path, tmp_path: Path
) -> None:
    worker = Worker()
    progress: list[Progress] = []
    try:
        first = worker.run(server_request(tmp_path / "first"), progress.append)
        assert isinstance(first, Failed), first
        assert "the server died during the load" in first.cause
        assert "exit status -9" in first.cause  # the cause names how it ended
        assert worker.server is None  # not kept for the next experiment

        second = worker.run(server_request(tmp_path / "second"), progress.append)
        assert isinstance(second, Failed) and not isinstance(second, Done)
        started = stand_ins.read_text().split()
        assert len(started) == 2 and started[0] != started[1]  # a fresh server each time
        assert worker.stats.loads == 2 and worker.stats.failures == 2
        assert [p.stage for p in progress].count("loading") == 2
    finally:
        worker.stop()


def test_server_mode_without_the_worker_is_refused_not_run_offline(tmp_path: Path) -> None:
    config = parse_experiment(server_request(tmp_path).config, "test")
    with pytest.raises(ExperimentError, match=r"load\.mode 'server' runs in the service's"):
        run_experiment(config, tmp_path / "out", RunIdentity())
    assert not (tmp_path / "out" / "result.json").exists()


def test_an_image_without_the_load_generator_fails_the_experiment_naming_it(
    stand_ins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin" / "guidellm").unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # the stand-in server, no guidellm
    worker = Worker()
    try:
        failed = worker.run(server_request(tmp_path / "out"), lambda progress: None)
        assert isinstance(failed, Failed), failed
        assert "guidellm is not installed in this image" in failed.cause
        assert "scripts/build-images.sh" in failed.cause  # and how to get it
    finally:
        worker.stop()
