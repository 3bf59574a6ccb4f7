"""The GPU hand-over: `lem release` asks a service's worker to unload and give the GPU back.

A real `lem worker` on a real socket with the tiny model on the CPU (the model is
unloaded, the worker keeps running, the next experiment loads again); the NVML side (is
the memory back?) in-process with the fake NVML and a stand-in backend on "cuda"; the
client's answers to each reply against a canned peer; the health rule once the GPU
changed hands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, installed
from fixtures.results import read_result
from fixtures.worker import (
    GIB,
    LEM,
    RunningWorker,
    assert_done,
    experiment_config,
    experiment_in_progress,
    lem_env,
    one_fake_gpu_installed,
    own_model_link,
    stand_in_loader,
    start_worker,
    tiny_gpu_config,
)
from test_client import CannedWorker

from llenergymeasure.contracts.wire import (
    Failed,
    Message,
    Progress,
    Released,
    ReleaseRequest,
    WorkerStats,
    decode_reply,
    decode_request,
    encode,
)
from llenergymeasure.measure.health import health_report
from llenergymeasure.runner.client import EXIT_NEEDS_RESTART
from llenergymeasure.runner.worker import Worker

STATS = WorkerStats(pid=7, started_at="2026-01-01T00:00:00+00:00", loads=1)


def lem_release(socket_file: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`lem release` against `socket_file`: the process and its JSON line."""
    completed = subprocess.run(
        [LEM, "release", "--worker-socket", socket_file],
        capture_output=True,
        text=True,
        env=lem_env(),
        check=False,
    )
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, (completed.stdout, completed.stderr)
    return completed, json.loads(lines[0])


@pytest.fixture
def worker(short_dir: Path) -> Iterator[RunningWorker]:
    running = start_worker(short_dir)
    yield running
    running.stop()


@pytest.fixture
def own_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return own_model_link(tiny_model_dir, tmp_path)


# --- a real worker on the CPU ----------------------------------------------------------


def test_release_unloads_the_model_keeps_the_worker_and_the_next_run_loads_again(
    worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    config = experiment_config(own_model)
    assert_done(worker.experiment(config, tmp_path / "before"))
    assert worker.status().loaded_model == str(own_model)

    completed, report = lem_release(worker.socket)
    _, again = lem_release(worker.socket)
    after = worker.experiment(config, tmp_path / "after")

    assert completed.returncode == 0, completed.stderr
    assert "lem worker: unloading (the GPU goes to another service)" in completed.stderr
    assert (report["released"], report["verified"]) == (True, False)  # CPU: nothing to check
    assert report["unloaded_model"] == str(own_model)
    assert report["detail"] == "no model of this worker ran on a GPU"
    assert (report["stats"]["loaded_key"], report["stats"]["loaded_model"]) == (None, None)
    assert (again["released"], again["unloaded_model"]) == (True, None)
    assert_done(after)
    reloaded = read_result(tmp_path / "after" / "result.json")
    assert (reloaded.timing.model_reused, reloaded.timing.cold_start_method) == (False, "unload")
    assert reloaded.timing.load_seconds > 0
    stats = worker.status()
    assert (stats.loads, stats.experiments, stats.pid) == (2, 2, worker.process.pid)
    assert worker.process.poll() is None


def test_a_release_waits_for_the_experiment_being_measured(
    worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    long_window = experiment_config(
        own_model, measurement={"warmup_prompts": 0, "min_window_seconds": 2.0}
    )
    first = experiment_in_progress(worker, long_window, tmp_path / "first")

    completed, report = lem_release(worker.socket)
    first_done = first.finish()

    assert_done(first_done)  # its window was not cut short
    assert "lem worker: waiting for first to finish" in completed.stderr
    assert (completed.returncode, report["unloaded_model"]) == (0, str(own_model))


# --- the NVML check, with the fake NVML ------------------------------------------------


@pytest.fixture
def one_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGpu]:
    with one_fake_gpu_installed(monkeypatch) as gpu:
        yield gpu


def test_a_release_reports_the_memory_back_through_nvml(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    worker.ensure_loaded(tiny_gpu_config(tiny_model_dir), cold_start=False, emit=lambda p: None)
    progress: list[Progress] = []

    reply = worker.handle(ReleaseRequest(), progress.append)

    assert isinstance(reply, Released)
    assert (reply.released, reply.verified) == (True, True)
    assert reply.unloaded_model == str(tiny_model_dir)
    assert (reply.memory_before_mib, reply.memory_after_mib) == ({0: 6744.0}, {0: 600.0})
    assert reply.detail == "GPU 0: 600 MiB used, 600 before loading"
    assert [p.stage for p in progress] == ["unloading", "memory_released"]
    assert worker.loaded is None and reply.stats.gpu_memory_held_mib == {0: 0.0}


def test_a_confirmed_release_is_not_undone_by_the_next_holders_model(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    worker.ensure_loaded(tiny_gpu_config(tiny_model_dir), cold_start=False, emit=lambda p: None)
    assert worker.release(lambda p: None).released
    one_fake_gpu.memory_used += 40 * GIB  # the service that took the GPU loads its model

    again = worker.release(lambda p: None)

    assert (again.released, again.verified, again.unloaded_model) == (True, True, None)
    assert again.detail == "nothing loaded since the GPU memory was confirmed back"


def test_a_release_whose_memory_stays_used_says_so(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=False))
    worker.ensure_loaded(tiny_gpu_config(tiny_model_dir), cold_start=False, emit=lambda p: None)

    first, second = worker.release(lambda p: None), worker.release(lambda p: None)

    for reply in (first, second):  # checked again: nothing confirmed it since the load
        assert (reply.released, reply.verified) == (False, True)
        assert reply.detail.startswith("GPU 0: 6744 MiB used after unloading, 600 MiB before")
    assert first.unloaded_model == str(tiny_model_dir) and worker.loaded is None


def test_an_unreadable_gpu_releases_unverified(tiny_model_dir: Path) -> None:
    gpu = FakeGpu()
    with installed(FakeNvml([gpu], driver_loaded=False)):
        worker = Worker(loader=stand_in_loader(gpu, releases_memory=True))
        worker.ensure_loaded(tiny_gpu_config(tiny_model_dir), cold_start=False, emit=lambda p: None)
        reply = worker.release(lambda p: None)

    assert (reply.released, reply.verified) == (True, False)
    assert reply.detail == "GPU memory is not readable through NVML"


# --- the health rule once the GPU changed hands -----------------------------------------


def test_after_the_hand_over_only_memory_the_holder_does_not_hold_counts(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    config = tiny_gpu_config(tiny_model_dir)
    sibling = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    holder = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    sibling.ensure_loaded(config, cold_start=False, emit=lambda p: None)
    before_release = health_report(holder.snapshot().gpu_memory_held_mib)["gpus"][0]

    assert sibling.release(lambda p: None).released
    holder.ensure_loaded(config, cold_start=False, emit=lambda p: None)
    (gpu,) = health_report(holder.snapshot().gpu_memory_held_mib)["gpus"]

    # Before the release the sibling's 6 GiB model counts against the holder ...
    assert before_release["memory_outside_worker_pct"] == 8.2
    # ... after it, the holder's own model is left out and only the rest counts.
    assert gpu["memory_held_by_worker_mib"] == 6 * 1024.0
    assert (gpu["memory_used_pct"], gpu["memory_outside_worker_pct"]) == (8.2, 0.7)


# --- the client: `lem release` against a canned worker ------------------------------------


@pytest.fixture
def canned(short_dir: Path) -> Iterator[Any]:
    peers: list[CannedWorker] = []

    def start(*replies: Message) -> CannedWorker:
        peers.append(CannedWorker(short_dir / "w.sock", list(replies)))
        return peers[-1]

    yield start
    for peer in peers:
        peer.close()


def released(ok: bool, detail: str) -> Released:
    return Released(
        released=ok,
        verified=True,
        unloaded_model="/models/big",
        detail=detail,
        memory_before_mib={0: 70000.0},
        memory_after_mib={0: 69000.0 if not ok else 600.0},
        stats=STATS,
    )


def test_a_release_request_and_its_reply_round_trip() -> None:
    reply = released(True, "GPU 0: 600 MiB used, 600 before loading")
    assert decode_request(encode(ReleaseRequest()).rstrip(b"\n")) == ReleaseRequest()
    assert decode_reply(encode(reply).rstrip(b"\n")) == reply


def test_memory_not_back_exits_75_with_the_report(canned: Any, short_dir: Path) -> None:
    peer = canned(released(False, "GPU 0: 69000 MiB used after unloading"))

    completed, report = lem_release(short_dir / "w.sock")

    assert peer.requests == [{"type": "release"}]
    assert completed.returncode == EXIT_NEEDS_RESTART
    assert (report["released"], report["detail"]) == (
        False,
        "GPU 0: 69000 MiB used after unloading",
    )
    assert report["memory_before_mib"] == {"0": 70000.0}
    assert "type" not in report


def test_a_refused_release_is_an_error_in_json_and_on_stderr(canned: Any, short_dir: Path) -> None:
    canned(Failed(cause="the worker is stopping", stats=STATS))

    completed, report = lem_release(short_dir / "w.sock")

    cause = f"the worker at {short_dir / 'w.sock'} refused the release: the worker is stopping"
    assert completed.returncode == 2
    assert report == {"released": False, "error": cause}
    assert completed.stderr.strip().splitlines()[-1] == f"error: {cause}"


def test_no_worker_is_an_error(short_dir: Path) -> None:
    completed, report = lem_release(short_dir / "none.sock")

    assert completed.returncode == 2
    assert report == {"released": False, "error": f"no worker socket at {short_dir / 'none.sock'}"}


def test_lem_release_imports_no_engine(canned: Any, short_dir: Path) -> None:
    canned(released(True, "ok"))
    argv = ["lem", "release", "--worker-socket", str(short_dir / "w.sock")]
    probe = (
        "import sys\n"
        "from llenergymeasure import cli\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    cli.main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "heavy = ('torch', 'transformers', 'vllm', 'tensorrt_llm',\n"
        "         'llenergymeasure.runner.experiment', 'llenergymeasure.runner.worker')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=lem_env(), check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "[]"
    assert json.loads(completed.stdout.splitlines()[0])["released"] is True
