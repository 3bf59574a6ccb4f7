"""The thin client and the wire format: what `lem experiment` does with each worker answer.

The client under test is the real `lem experiment` process; the worker side is a peer
on a real Unix socket that answers with the protocol's messages, so that answers a CPU
worker cannot give (a cold start that needs a restart) are covered too.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts import wire as protocol
from llenergymeasure.contracts.wire import (
    Done,
    Failed,
    Message,
    NeedsRestart,
    Progress,
    ProtocolError,
    RequestIdentity,
    StatusReply,
    StatusRequest,
    WorkerStats,
    check_socket_path,
    decode_reply,
    decode_request,
    encode,
    read_line,
    socket_path,
)
from llenergymeasure.runner.client import (
    EXIT_NEEDS_RESTART,
    NoWorker,
    connect_worker,
    run_request,
)

LEM = Path(sys.executable).with_name("lem")
STATS = WorkerStats(pid=4242, started_at="2026-01-01T00:00:00+00:00", loads=1)
KNOB = {
    "knob": "power_limit_w",
    "gpu_index": 0,
    "asked": 300,
    "applied": 300.0,
    "supported_min": 200,
    "supported_max": 700,
}
ENGINE_MODULES = ("torch", "transformers", "vllm", "tensorrt_llm")


class CannedWorker:
    """Listens at `path`, reads one request, sends `replies`, hangs up."""

    def __init__(self, path: Path, replies: list[Message]) -> None:
        self.path, self.replies = path, replies
        self.requests: list[dict[str, Any]] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._answer_one, daemon=True)
        self._thread.start()

    def _answer_one(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            line = connection.makefile("rb").readline()
            if not line:
                return  # the wake-up call of close()
            self.requests.append(json.loads(line))
            for reply in self.replies:
                connection.sendall(encode(reply))

    def close(self) -> None:
        if self._thread.is_alive():  # nobody came: connect once so that accept returns
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake_up:
                wake_up.connect(str(self.path))
        self._thread.join(timeout=60)
        self._listener.close()


@pytest.fixture
def canned(short_dir: Path) -> Iterator[Any]:
    workers: list[CannedWorker] = []

    def start(*replies: Message) -> CannedWorker:
        workers.append(CannedWorker(short_dir / "w.sock", list(replies)))
        return workers[-1]

    yield start
    for worker in workers:
        worker.close()


def config_data(model_path: str = "/no/such/model") -> dict[str, Any]:
    return {
        "config_name": "client-test",
        "backend": "pytorch",
        "model": {"path": model_path},
        "measurement": {"warmup_prompts": 0, "min_window_seconds": 0.1, "baseline_seconds": 0},
    }


def lem_experiment(
    tmp_path: Path, socket_file: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_data()), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "LEM_WORKER_SOCKET"}
    command: list[str | Path] = [LEM, "experiment", config_file, "--out", "out"]
    command += ["--worker-socket", socket_file]
    return subprocess.run(
        [*command, *options], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )


def test_the_client_module_imports_no_engine_and_not_the_runner() -> None:
    probe = (
        "import sys, llenergymeasure.runner.client, llenergymeasure.cli\n"
        "heavy = {names!r}\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    ).format(names=(*ENGINE_MODULES, "llenergymeasure.runner.experiment"))

    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert completed.stdout.strip() == "[]"


def test_needs_restart_exits_75_after_the_progress_so_far(
    canned: Any, short_dir: Path, tmp_path: Path
) -> None:
    peer = canned(
        Progress(stage="unloading", message="unloading (cold start requested)"),
        NeedsRestart(cause="unloading did not release GPU memory: GPU 0: 9000 MiB", stats=STATS),
    )

    completed = lem_experiment(
        tmp_path,
        peer.path,
        "--cold-start",
        "--gap-waited",
        "12.5",
        "--exp-id",
        "demo__c__c01",
        "--gpu-knobs",
        json.dumps([KNOB]),
    )

    assert completed.returncode == EXIT_NEEDS_RESTART == 75
    assert completed.stderr.splitlines() == [
        "lem worker: unloading (cold start requested)",
        "error: unloading did not release GPU memory: GPU 0: 9000 MiB; "
        "restart the service and run the experiment again",
    ]
    (request,) = peer.requests
    assert (request["type"], request["cold_start"], request["gap_waited_seconds"]) == (
        "run",
        True,
        12.5,
    )
    assert request["out_dir"] == str(tmp_path / "out")  # absolute: the worker has its own cwd
    assert request["identity"]["exp_id"] == "demo__c__c01"
    assert request["gpu_knobs"] == [KNOB]
    assert request["config"] == ExperimentConfig.model_validate(config_data()).model_dump(
        mode="json"
    )


def test_a_failure_on_the_worker_is_the_clients_error(
    canned: Any, short_dir: Path, tmp_path: Path
) -> None:
    peer = canned(Failed(cause="model path /no/such/model does not exist", stats=STATS))

    completed = lem_experiment(tmp_path, peer.path)

    assert completed.returncode == 2
    assert completed.stderr == "error: model path /no/such/model does not exist\n"


def test_a_worker_that_hangs_up_early_is_an_error_not_a_result(
    canned: Any, short_dir: Path, tmp_path: Path
) -> None:
    peer = canned(Progress(stage="window", message="window started"))

    completed = lem_experiment(tmp_path, peer.path)

    assert completed.returncode == 2
    assert completed.stderr.splitlines()[-1] == (
        "error: the worker closed the connection before answering "
        "(it stopped or crashed: see the service's logs)"
    )


def test_a_done_without_a_readable_result_is_an_error(
    canned: Any, short_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "out" / "result.json"
    peer = canned(Done(result_path=str(missing), model_reused=True, load_seconds=0, stats=STATS))

    completed = lem_experiment(tmp_path, peer.path)

    assert completed.returncode == 2
    assert completed.stderr.startswith(
        f"error: {missing}: the worker reported it written, but it cannot be read:"
    )


def test_a_stale_socket_falls_back_to_this_process_and_says_so(
    short_dir: Path, tmp_path: Path
) -> None:
    stale = short_dir / "w.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_behind:
        left_behind.bind(str(stale))  # the file stays, nobody listens

    completed = lem_experiment(tmp_path, stale)

    # in this process, the missing model is found before any engine is imported
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"lem: nothing listens on the worker socket {stale} (stale file): running in this process",
        "error: model path /no/such/model does not exist",
    ]


def test_without_a_socket_file_the_experiment_runs_here_quietly(
    short_dir: Path, tmp_path: Path
) -> None:
    completed = lem_experiment(tmp_path, short_dir / "absent.sock")

    assert completed.returncode == 2
    assert completed.stderr == "error: model path /no/such/model does not exist\n"


def test_no_worker_ignores_a_listening_worker(canned: Any, short_dir: Path, tmp_path: Path) -> None:
    peer = canned(Failed(cause="must not be asked", stats=STATS))

    completed = lem_experiment(tmp_path, peer.path, "--no-worker")

    assert completed.stderr == "error: model path /no/such/model does not exist\n"
    assert peer.requests == []


def test_connect_worker_tells_missing_and_stale_sockets_apart(short_dir: Path) -> None:
    stale = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_behind:
        left_behind.bind(str(stale))

    with pytest.raises(NoWorker, match="no worker socket at"):
        connect_worker(short_dir / "absent.sock")
    with pytest.raises(NoWorker, match="nothing listens"):
        connect_worker(stale)


def test_every_message_survives_the_wire() -> None:
    request = run_request(
        ExperimentConfig.model_validate(config_data()),
        Path("configs/x.json"),
        Path("results/x"),
        RequestIdentity(exp_id="c__x__c01", cycle=1),
        baseline_cache=Path("state/baseline.json"),
    )
    replies: list[Message] = [
        Progress(stage="loading", message="loading"),
        Done(result_path="/r/result.json", model_reused=False, load_seconds=1.25, stats=STATS),
        Failed(cause="boom", stats=STATS),
        NeedsRestart(cause="memory", stats=STATS),
        StatusReply(stats=STATS),
    ]

    assert decode_request(encode(request).rstrip(b"\n")) == request
    assert decode_request(encode(StatusRequest()).rstrip(b"\n")) == StatusRequest()
    for reply in replies:
        line = encode(reply)
        assert line.count(b"\n") == 1 and line.endswith(b"\n")
        assert decode_reply(line.rstrip(b"\n")) == reply
    assert Path(request.out_dir).is_absolute() and Path(request.baseline_cache or "").is_absolute()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"not json", "not a worker request"),
        (b'{"type": "shutdown"}', "not a worker request"),
        (b'{"type": "run", "config": {}, "out_dir": "/o"}', "config_source"),
        (b'{"type": "status", "extra": 1}', "extra"),
    ],
)
def test_a_malformed_request_is_a_protocol_error(line: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_request(line)


def test_a_request_of_another_protocol_version_names_both_versions() -> None:
    future = json.dumps({"type": "run", "protocol": 2, "a_field_of_version_2": True})

    with pytest.raises(ProtocolError) as refused:
        decode_request(future.encode())

    assert str(refused.value) == (
        "the client speaks worker protocol 2, this worker 1: use the same lem version on both sides"
    )


def test_an_endless_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 16)

    assert read_line(io.BytesIO(b"x" * 16 + b"\n")) == b"x" * 16
    with pytest.raises(ProtocolError, match="message longer than 16 bytes"):
        read_line(io.BytesIO(b"x" * 17 + b"\n"))


def test_the_socket_path_comes_from_the_option_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEM_WORKER_SOCKET", "/tmp/from-env.sock")
    from_env = socket_path()
    from_option = socket_path(Path("/tmp/option.sock"))
    monkeypatch.delenv("LEM_WORKER_SOCKET")

    assert (from_option, from_env, socket_path()) == (
        Path("/tmp/option.sock"),
        Path("/tmp/from-env.sock"),
        Path("/run/lem/worker.sock"),
    )
    with pytest.raises(ProtocolError, match="longer than 107 bytes"):
        check_socket_path(Path("/tmp") / ("s" * 120))


# -- --require-worker: a campaign never mixes a cold in-process run into warm ones --------


def test_require_worker_fails_when_no_worker_answers_and_runs_nothing_here(
    short_dir: Path, tmp_path: Path
) -> None:
    stale = short_dir / "w.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_behind:
        left_behind.bind(str(stale))
    absent = short_dir / "absent.sock"

    runs = [lem_experiment(tmp_path, path, "--require-worker") for path in (stale, absent)]

    # in this process the missing model would be the error: it is never reached
    assert [run.returncode for run in runs] == [2, 2]
    assert runs[0].stderr == (
        f"error: nothing listens on the worker socket {stale} (stale file): --require-worker: "
        "not running it in this process (a cold run would mix with the worker's warm ones); "
        "start the service's worker, or run with --no-worker on purpose\n"
    )
    assert runs[1].stderr.startswith(f"error: no worker socket at {absent}: --require-worker:")
    assert not (tmp_path / "out").exists()


def test_require_worker_and_no_worker_together_are_refused(short_dir: Path, tmp_path: Path) -> None:
    completed = lem_experiment(
        tmp_path, short_dir / "absent.sock", "--no-worker", "--require-worker"
    )

    assert completed.returncode == 2
    assert completed.stderr == (
        "error: --no-worker and --require-worker contradict each other: choose one\n"
    )


def test_cancel_is_sent_with_the_status_request(canned: Any, short_dir: Path) -> None:
    peer = canned(StatusReply(stats=STATS))

    completed = subprocess.run(
        [LEM, "worker", "--status", "--cancel", "demo__c__c01", "--socket", peer.path],
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["pid"] == STATS.pid
    assert peer.requests == [{"type": "status", "cancel": "demo__c__c01"}]
