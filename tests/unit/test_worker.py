"""`lem worker`: models kept loaded between experiments, cold starts, failures, SIGTERM.

Real `lem worker` processes on real Unix sockets, driven by real `lem experiment`
clients, with the tiny model on the CPU. The NVML side of cold starts (did GPU memory
come back?) runs in-process with the fake NVML, a stand-in backend on "cuda" and the
real Worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, installed
from fixtures.results import read_result
from fixtures.worker import (
    LEM,
    MIB,
    MIN_WINDOW_S,
    PROCESS_TIMEOUT_S,
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

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.contracts.wire import (
    Done,
    Failed,
    NeedsRestart,
    Progress,
    RequestIdentity,
    RunRequest,
    WorkerError,
)
from llenergymeasure.runner.client import NoReply, run_on_worker, run_request, worker_status
from llenergymeasure.runner.loadkey import load_key
from llenergymeasure.runner.worker import (
    MemoryTolerance,
    Worker,
    check_memory_released,
    listen,
)


@pytest.fixture
def fresh_worker(short_dir: Path) -> Iterator[RunningWorker]:
    worker = start_worker(short_dir)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def shared_worker() -> Iterator[RunningWorker]:
    """One worker for the tests that measure changes in its counters, not absolute ones."""
    directory = Path(tempfile.mkdtemp(prefix="lemw-"))
    worker = start_worker(directory)
    yield worker
    worker.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return own_model_link(tiny_model_dir, tmp_path)


def test_one_load_per_load_key_and_a_new_load_when_the_key_changes(
    fresh_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    same_key = [
        experiment_config(own_model),
        experiment_config(own_model, config_name="bs2", pytorch={"batch_size": 2}),
        experiment_config(own_model, decoder={"max_new_tokens": 4}),
    ]
    other_precision = experiment_config(own_model, precision="bfloat16")
    assert len({load_key(ExperimentConfig.model_validate(c)) for c in same_key}) == 1
    outs = [tmp_path / f"run{n}" for n in range(3)]

    for config, out in zip(same_key, outs, strict=True):
        assert_done(fresh_worker.experiment(config, out))
    loads_for_one_key = fresh_worker.status().loads
    key_change = fresh_worker.experiment(other_precision, tmp_path / "bf16")

    first, *reused = [read_result(out / "result.json") for out in outs]
    assert loads_for_one_key == 1
    assert (first.timing.model_reused, first.timing.cold_start_method) == (False, "fresh_process")
    assert first.timing.load_seconds > 0
    for result in reused:
        assert (result.timing.model_reused, result.timing.load_seconds) == (True, 0.0)
        assert result.timing.cold_start_method is None
    assert reused[0].config["pytorch"]["batch_size"] == 2
    assert_done(key_change)
    assert "unloading (load key changes to" in key_change.stderr
    reloaded = read_result(tmp_path / "bf16" / "result.json")
    assert (reloaded.timing.model_reused, reloaded.timing.cold_start_method) == (False, "unload")
    assert reloaded.timing.load_seconds > 0
    stats = fresh_worker.status()
    assert (stats.loads, stats.experiments) == (2, 4)
    assert stats.loaded_key == load_key(ExperimentConfig.model_validate(other_precision))


def test_a_cold_start_unloads_and_loads_again_on_the_cpu(
    shared_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    config = experiment_config(own_model)
    assert_done(shared_worker.experiment(config, tmp_path / "warm"))
    loads_before = shared_worker.status().loads

    completed = shared_worker.experiment(config, tmp_path / "cold", "--cold-start")

    assert_done(completed)
    assert "unloading (cold start requested)" in completed.stderr
    result = read_result(tmp_path / "cold" / "result.json")
    assert (result.timing.model_reused, result.timing.cold_start_method) == (False, "unload")
    assert result.timing.load_seconds > 0
    assert shared_worker.status().loads == loads_before + 1


def plausible(result: ExperimentResult) -> None:
    assert result.tokens.output_tokens > 0
    assert result.tokens.requests == 2 * result.timing.window_repeats
    assert result.ttft.mean is not None and result.latency.mean is not None
    assert 0 < result.ttft.mean < result.latency.mean
    assert result.timing.window_seconds >= MIN_WINDOW_S
    assert result.throughput.output_tokens_per_s > 0


def field_paths(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return {prefix}
    return {path for key, value in data.items() for path in field_paths(value, f"{prefix}.{key}")}


def test_reused_and_fresh_process_results_share_the_schema(
    shared_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    config = experiment_config(own_model)
    for name in ("load", "reuse"):
        assert_done(shared_worker.experiment(config, tmp_path / name))
    experiments_before = shared_worker.status().experiments

    fresh = shared_worker.experiment(config, tmp_path / "fresh", "--no-worker")

    assert_done(fresh)
    assert "lem worker:" not in fresh.stderr
    assert shared_worker.status().experiments == experiments_before
    reused = read_result(tmp_path / "reuse" / "result.json")
    in_process = read_result(tmp_path / "fresh" / "result.json")
    assert reused.timing.model_reused and not in_process.timing.model_reused
    assert in_process.timing.cold_start_method == "fresh_process"
    assert (reused.timing.runner, in_process.timing.runner) == ("worker", "in_process")
    for result in (reused, in_process):
        plausible(result)
    assert field_paths(reused.model_dump(mode="json")) == field_paths(
        in_process.model_dump(mode="json")
    )


def test_the_worker_survives_a_failed_experiment(
    shared_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-prompts.txt"
    before = shared_worker.status()

    failed = shared_worker.experiment(
        experiment_config(own_model, dataset={"name": str(missing), "num_prompts": 2}),
        tmp_path / "bad",
    )
    served = shared_worker.experiment(experiment_config(own_model), tmp_path / "good")

    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1] == f"error: {missing}: prompt file not found"
    assert not (tmp_path / "bad" / "result.json").exists()
    assert_done(served)
    after = shared_worker.status()
    assert (after.failures, after.experiments) == (before.failures + 1, before.experiments + 1)
    assert shared_worker.process.poll() is None


def test_a_request_arriving_during_an_experiment_waits_its_turn(
    shared_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    long_window = experiment_config(
        own_model, measurement={"warmup_prompts": 0, "min_window_seconds": 2.0}
    )
    first = experiment_in_progress(shared_worker, long_window, tmp_path / "first")
    progress: list[Progress] = []
    request = run_request(
        ExperimentConfig.model_validate(experiment_config(own_model)),
        Path("second.json"),
        tmp_path / "second",
        RequestIdentity(exp_id="second"),
    )

    reply = run_on_worker(shared_worker.socket, request, progress.append)
    first_done = first.finish()

    assert isinstance(reply, Done)
    assert_done(first_done)
    assert progress[0] == Progress(stage="queued", message="waiting for first to finish")
    earlier, later = (read_result(tmp_path / name / "result.json") for name in ("first", "second"))
    assert earlier.timing.finished_at <= later.timing.started_at  # never two at once


def test_the_client_path_imports_no_engine(
    shared_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(experiment_config(own_model)), encoding="utf-8")
    argv = ["lem", "experiment", str(config_file), "--out", str(tmp_path / "out")]
    argv += ["--worker-socket", str(shared_worker.socket)]
    probe = (
        "import sys\n"
        "from llenergymeasure.cli import app\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "heavy = ('torch', 'transformers', 'vllm', 'tensorrt_llm',\n"
        "         'llenergymeasure.runner.experiment', 'llenergymeasure.runner.worker')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=lem_env(), check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "[]"
    assert read_result(tmp_path / "out" / "result.json").tokens.output_tokens > 0


def test_sigterm_unloads_removes_the_socket_and_exits(
    fresh_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    assert_done(fresh_worker.experiment(experiment_config(own_model), tmp_path / "out"))

    code = fresh_worker.stop()

    assert code == 0
    assert not fresh_worker.socket.exists()
    assert "SIGTERM: model unloaded, exiting" in fresh_worker.log.read_text(encoding="utf-8")


def test_sigterm_during_an_experiment_exits_without_waiting_for_it(
    fresh_worker: RunningWorker, own_model: Path, tmp_path: Path
) -> None:
    endless = experiment_config(
        own_model, measurement={"warmup_prompts": 0, "min_window_seconds": 3600.0}
    )
    client = experiment_in_progress(fresh_worker, endless, tmp_path / "endless")

    code = fresh_worker.stop()
    client_done = client.finish()

    assert code == 0
    assert client_done.returncode == 2
    assert "the worker closed the connection before answering" in client_done.stderr
    assert not (tmp_path / "endless" / "result.json").exists()
    log = fresh_worker.log.read_text(encoding="utf-8")
    assert "SIGTERM during endless: exiting without waiting for it" in log


def test_a_frozen_worker_is_told_apart_from_a_busy_one(fresh_worker: RunningWorker) -> None:
    # A stopped process still accepts connections (the kernel queues them), never answers.
    pid = fresh_worker.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(NoReply, match=r"^the worker did not answer within 0.5 s"):
            worker_status(fresh_worker.socket, timeout=0.5)
        cli = subprocess.run(
            [LEM, "worker", "--status", "--socket", fresh_worker.socket],
            capture_output=True,
            text=True,
            env=lem_env(),
            check=False,
        )
    finally:
        os.kill(pid, signal.SIGCONT)

    assert cli.returncode == 2
    assert cli.stderr == "error: the worker did not answer within 5 s (frozen or stopped)\n"
    assert fresh_worker.status().pid == pid  # running again, it answers


def test_a_second_worker_on_the_same_socket_is_refused(
    fresh_worker: RunningWorker,
) -> None:
    completed = subprocess.run(
        [LEM, "worker", "--socket", fresh_worker.socket],
        capture_output=True,
        text=True,
        env=lem_env(),
        check=False,
    )

    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        f"error: another worker is already serving {fresh_worker.socket}"
    )
    assert fresh_worker.status().pid == fresh_worker.process.pid


def test_a_stale_socket_is_replaced_and_a_regular_file_kept(short_dir: Path) -> None:
    stale = short_dir / "stale.sock"
    listen(stale).close()  # a socket file nobody listens on any more
    regular = short_dir / "notes.txt"
    regular.write_text("keep me", encoding="utf-8")

    listen(stale).close()
    with pytest.raises(WorkerError, match=f"{regular} exists and is not a socket"):
        listen(regular)

    assert regular.read_text(encoding="utf-8") == "keep me"


# --- cold starts on a GPU: the NVML memory check, with the fake NVML ---------------------


@pytest.fixture
def one_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGpu]:
    with one_fake_gpu_installed(monkeypatch) as gpu:
        yield gpu


def cold_start_request(config: ExperimentConfig, out_dir: Path) -> RunRequest:
    return RunRequest(
        config=config.model_dump(mode="json"),
        config_source="cold.json",
        out_dir=str(out_dir),
        cold_start=True,
    )


def test_memory_check_allows_the_larger_of_mib_and_share_of_total(one_fake_gpu: FakeGpu) -> None:
    before = {0: (600.0, 80 * 1024.0)}  # 5 % of 80 GiB = 4096 MiB > 512 MiB
    tolerance = MemoryTolerance(mib=512, pct_of_total=5)

    one_fake_gpu.memory_used = (600 + 4000) * MIB
    within = check_memory_released(before, tolerance)
    one_fake_gpu.memory_used = (600 + 4200) * MIB
    beyond = check_memory_released(before, tolerance)

    assert within.released
    assert not beyond.released
    assert beyond.detail == (
        "GPU 0: 4800 MiB used after unloading, 600 MiB before the first load (tolerance 4096 MiB)"
    )
    assert MemoryTolerance(mib=512, pct_of_total=5).allowed_mib(8 * 1024.0) == 512


def test_cold_start_by_unloading_when_gpu_memory_falls_back(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    config = tiny_gpu_config(tiny_model_dir)
    progress: list[Progress] = []
    first = worker.ensure_loaded(config, cold_start=False, emit=progress.append)

    warnings = worker.make_room(config, cold_start=True, emit=progress.append)
    second = worker.ensure_loaded(config, cold_start=True, emit=progress.append)

    assert (first.cold_start_method, second.cold_start_method) == ("fresh_process", "unload")
    assert second is not first and worker.stats.loads == 2
    assert warnings == []
    assert [p.stage for p in progress] == [
        "loading",
        "loaded",
        "unloading",
        "memory_released",
        "loading",
        "loaded",
    ]


def test_cold_start_needs_a_restart_when_gpu_memory_stays_used(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path, tmp_path: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=False))
    config = tiny_gpu_config(tiny_model_dir)
    worker.ensure_loaded(config, cold_start=False, emit=lambda progress: None)

    reply = worker.run(cold_start_request(config, tmp_path / "out"), emit=lambda progress: None)

    assert isinstance(reply, NeedsRestart)
    assert reply.cause.startswith("unloading did not release GPU memory: GPU 0: 6744 MiB used")
    assert (reply.stats.loads, reply.stats.loaded_key) == (1, None)
    assert not (tmp_path / "out").exists()


def test_a_fresh_worker_records_a_cold_start_as_a_restart(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=False))
    config = tiny_gpu_config(tiny_model_dir)

    assert worker.make_room(config, cold_start=True, emit=lambda progress: None) == []
    loaded = worker.ensure_loaded(config, cold_start=True, emit=lambda progress: None)

    assert loaded.cold_start_method == "restart"


def test_an_unverifiable_cold_start_is_flagged_in_the_result(tiny_model_dir: Path) -> None:
    gpu = FakeGpu()
    with installed(FakeNvml([gpu], driver_loaded=False)):
        worker = Worker(loader=stand_in_loader(gpu, releases_memory=True))
        config = tiny_gpu_config(tiny_model_dir)
        worker.ensure_loaded(config, cold_start=False, emit=lambda progress: None)

        warnings = worker.make_room(config, cold_start=True, emit=lambda progress: None)

    assert warnings == [
        "cold start by unloading not verified: GPU memory is not readable through NVML"
    ]


def test_out_of_memory_unloads_and_the_worker_keeps_serving(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path, tmp_path: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    config = tiny_gpu_config(tiny_model_dir)
    request = cold_start_request(config, tmp_path / "out").model_copy(update={"cold_start": False})

    reply = worker.run(request, emit=lambda progress: None)

    assert isinstance(reply, Failed)
    assert reply.cause.startswith(f"out of memory running {tiny_model_dir} (pytorch, float32)")
    assert worker.loaded is None and one_fake_gpu.memory_used == 600 * MIB
    assert (reply.stats.loads, reply.stats.failures) == (1, 1)


def test_the_worker_reports_the_gpu_memory_it_holds(
    one_fake_gpu: FakeGpu, tiny_model_dir: Path
) -> None:
    worker = Worker(loader=stand_in_loader(one_fake_gpu, releases_memory=True))
    config = tiny_gpu_config(tiny_model_dir)

    worker.ensure_loaded(config, cold_start=False, emit=lambda progress: None)
    while_loaded = worker.snapshot().gpu_memory_held_mib
    worker.unload()

    assert while_loaded == {0: 6 * 1024.0}  # the stand-in model's 6 GiB
    assert worker.snapshot().gpu_memory_held_mib == {0: 0.0}


# A worker whose request thread is the one the kernel hands SIGTERM to.
SIGTERM_ON_A_REQUEST_THREAD = """
import signal, sys, threading
from pathlib import Path
from llenergymeasure.runner.worker import serve

class SignalledOnRequestThread:
    def serve_connection(self, connection):
        connection.close()
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

print(serve(SignalledOnRequestThread(), Path(sys.argv[1]), lambda: print("ready", flush=True)))
"""


def test_sigterm_taken_by_a_request_thread_still_stops_the_accept_loop(short_dir: Path) -> None:
    socket_path = short_dir / "w.sock"
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_ON_A_REQUEST_THREAD, socket_path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    worker_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    worker_socket.connect(os.fspath(socket_path))
    worker_socket.close()
    try:
        out, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        process.kill()
    assert out == "SIGTERM\n"
    assert not socket_path.exists()
