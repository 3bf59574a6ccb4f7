"""`lem worker`: a long-lived process that keeps one model loaded between experiments.

The backend container's main process. It listens on a Unix socket (protocol.py) and
measures one experiment at a time: requests that arrive while one is measured wait
their turn (the client is told it is queued), because two experiments on one GPU
would share its energy counter. At most one model is resident, keyed by
`load_key(config)`: the same key reuses it, another key unloads it first.

A cold-start request unloads the model and, when it ran on a GPU, checks through
NVML that the GPU memory used fell back near what it was before this process loaded
anything. When it did not (an engine that keeps its memory), the worker answers
`needs_restart`: the orchestration restarts the service and asks again, and the
fresh process records the cold start as made by a restart. A release request (the
GPU goes to another service of the lane) unloads and checks the same way, and says
whether the memory is back. See docs/worker.md.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from llenergymeasure.config.loader import parse_experiment
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.result import ExperimentResult, Timing
from llenergymeasure.contracts.wire import (
    AnyRequest,
    Done,
    Failed,
    FinalReply,
    NeedsRestart,
    Progress,
    ProtocolError,
    Released,
    ReleaseRequest,
    RunRequest,
    StatusReply,
    StatusRequest,
    WorkerError,
    WorkerStats,
    check_socket_path,
    connect,
    decode_request,
    read_line,
    send,
)
from llenergymeasure.errors import LemError
from llenergymeasure.measure import nvml
from llenergymeasure.measure.gpus import visible_gpu_indices
from llenergymeasure.runner.experiment import (
    ColdStartMethod,
    LoadedModel,
    RunIdentity,
    describe_failure,
    experiment_gpus,
    idle_before_load,
    is_out_of_memory,
    load_model,
    measure_experiment,
    write_result,
)
from llenergymeasure.runner.loadkey import load_key
from llenergymeasure.runner.serve_run import run_load, server_result
from llenergymeasure.runner.servers import DEFAULT_PORT, ServerProcess, server_command

log = logging.getLogger(__name__)

# A client sends its request right after connecting; one that does not is dropped.
REQUEST_READ_TIMEOUT_S = 30.0
LISTEN_BACKLOG = 16
# The kernel may deliver SIGTERM to a request thread; Python then runs the handler only once
# the main thread is back in the interpreter, so accept() wakes at this interval to let it.
ACCEPT_POLL_S = 0.5
# A server loads its model before it answers: minutes for a large one on a GPU.
SERVER_READY_TIMEOUT_S = 900.0
SERVER_DIR = Path("/tmp/lem-server")  # its log and options files, inside the container
# Only the container's own user (the one `docker compose exec` runs as) may connect.
SOCKET_MODE = 0o600

Emit = Callable[[Progress], None]
Loader = Callable[[ExperimentConfig], LoadedModel]


@dataclass(frozen=True)
class MemoryTolerance:
    """How far above its pre-load level GPU memory may stay after an unload.

    The larger of `mib` and `pct_of_total` % of the GPU's memory: after an unload the
    CUDA context and library workspaces stay resident, a model's weights must not.
    """

    mib: float = 512.0
    pct_of_total: float = 5.0

    def allowed_mib(self, total_mib: float) -> float:
        return max(self.mib, total_mib * self.pct_of_total / 100.0)


@dataclass(frozen=True)
class MemoryCheck:
    released: bool
    detail: str
    verified: bool = True  # False: passed without an NVML reading (CPU, or none readable)


class ColdStartNotMade(Exception):
    """Unloading did not give the GPU memory back: only a restart makes this cold start."""


class Cancelled(LemError):
    """The orchestration asked to stop this experiment (it ran past its timeout)."""


class StopWorker(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT to leave the accept loop."""


def gpu_memory_snapshot() -> dict[int, tuple[float, float]]:
    """(used, total) MiB per GPU this process uses; empty without NVML."""
    snapshot = {}
    for index in visible_gpu_indices():
        reading = nvml.memory_mib(index)
        if reading is not None:
            snapshot[index] = reading
    return snapshot


def check_memory_released(
    before_load: dict[int, tuple[float, float]], tolerance: MemoryTolerance
) -> MemoryCheck:
    """Compare each GPU's memory used now with `before_load` (from `gpu_memory_snapshot`)."""
    if not before_load:
        return MemoryCheck(False, "GPU memory is not readable through NVML")
    problems, levels = [], []
    for index, (used_before, total) in sorted(before_load.items()):
        reading = nvml.memory_mib(index)
        if reading is None:
            problems.append(f"GPU {index}: memory not readable through NVML")
            continue
        used_now, allowed = reading[0], tolerance.allowed_mib(total)
        levels.append(f"GPU {index}: {used_now:.0f} MiB used, {used_before:.0f} before loading")
        if used_now > used_before + allowed:
            problems.append(
                f"GPU {index}: {used_now:.0f} MiB used after unloading, "
                f"{used_before:.0f} MiB before the first load (tolerance {allowed:.0f} MiB)"
            )
    if problems:
        return MemoryCheck(False, "; ".join(problems))
    return MemoryCheck(True, "; ".join(levels))


def memory_held_mib(
    before_load: dict[int, tuple[float, float]], now: dict[int, tuple[float, float]]
) -> dict[int, float]:
    """MiB per GPU above its level before this process loaded anything (never negative)."""
    return {
        index: round(max(0.0, used - before_load[index][0]), 1)
        for index, (used, _total) in sorted(now.items())
        if index in before_load
    }


def release_cached_memory() -> None:
    """Collect garbage and, where torch is already imported, return its cached CUDA memory."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class Worker:
    """Serves run and status requests; holds at most one loaded model."""

    def __init__(
        self,
        memory_tolerance: MemoryTolerance = MemoryTolerance(),
        loader: Loader = load_model,
    ) -> None:
        self.memory_tolerance = memory_tolerance
        self.loaded: LoadedModel | None = None
        # Server mode: the engine's own server, up while configs of one load key follow
        # one another (only the load differs), and its key.
        self.server: ServerProcess | None = None
        self.server_key: str | None = None
        self.stats = WorkerStats(pid=os.getpid(), started_at=_utc_now())
        self._load = loader
        # Read before this process loads anything: what a cold start must get back to.
        self._memory_before_load = gpu_memory_snapshot()
        self._used_gpu = False
        # `stats.loads` when NVML last confirmed the GPU memory back after an unload.
        self._loads_when_memory_back = 0
        self._run_lock = threading.Lock()
        self._stopping = threading.Event()
        # Experiments waiting for the run lock, and those asked to stop (`cancel`);
        # with `stats.busy_with`, changed only under `_cancel_lock`.
        self._waiting: Counter[str] = Counter()
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()

    def handle(self, request: AnyRequest, emit: Emit) -> FinalReply:
        if isinstance(request, ReleaseRequest):
            return self.release_in_turn(emit)
        if isinstance(request, StatusRequest):
            if request.cancel is not None:
                self.cancel(request.cancel)
            return StatusReply(stats=self.snapshot())
        return self.run_in_turn(request, emit)

    def cancel(self, exp_id: str) -> bool:
        """Ask experiment `exp_id` to stop: the one being measured stops at its next
        stage, one waiting its turn never starts. False when the worker has no such one.

        Cooperative: an engine call that never returns is not interrupted; the
        orchestration restarts the service when the experiment does not stop.
        """
        with self._cancel_lock:
            if exp_id != self.stats.busy_with and not self._waiting[exp_id]:
                return False
            self._cancelled.add(exp_id)
        log.warning("%s: asked to stop (past its timeout)", exp_id)
        return True

    def _cancellable(self, name: str, emit: Emit) -> Emit:
        """`emit` that first raises Cancelled once `name` was asked to stop: every
        stage of an experiment reports progress, so it stops between stages."""

        def checked(progress: Progress) -> None:
            if name in self._cancelled:
                raise Cancelled(f"{name}: stopped on request (past its timeout)")
            emit(progress)

        return checked

    def snapshot(self) -> WorkerStats:
        return self.stats.model_copy()

    def run_in_turn(self, request: RunRequest, emit: Emit) -> FinalReply:
        """Run `request` once no other experiment is being measured."""
        name = request.identity.exp_id or request.config_source
        with self._cancel_lock:
            self._waiting[name] += 1
        self._wait_turn(emit)
        try:
            with self._cancel_lock:
                self._waiting -= Counter([name])  # drops the name at zero
                self.stats.busy_with = name
            if self._stopping.is_set():
                return self._failed("the worker is stopping (SIGTERM): run it again once it is up")
            if name in self._cancelled:
                return self._failed(f"{name}: stopped on request before it started")
            return self.run(request, self._cancellable(name, emit))
        finally:
            with self._cancel_lock:
                self.stats.busy_with = None
                self._cancelled.discard(name)
            self._run_lock.release()

    def _wait_turn(self, emit: Emit) -> None:
        """Take the run lock, telling the client when it has to wait for an experiment."""
        if not self._run_lock.acquire(blocking=False):
            running = self.stats.busy_with or "the current experiment"
            emit(Progress(stage="queued", message=f"waiting for {running} to finish"))
            self._run_lock.acquire()

    def release_in_turn(self, emit: Emit) -> Released:
        """`release` once no experiment is measured: the GPU never goes from under a window."""
        self._wait_turn(emit)
        try:
            return self.release(emit)
        finally:
            self._run_lock.release()

    def release(self, emit: Emit) -> Released:
        """Hand the GPU over to another service of the lane: unload the model, give its
        cached memory back and check through NVML that the memory is back (as for a cold
        start). The container keeps running; the next experiment loads again."""
        before = gpu_memory_snapshot()
        unloaded = self.stats.loaded_model
        self.unload(emit, "the GPU goes to another service")
        check = self.gpu_memory_back()
        if check.released and check.verified:
            emit(Progress(stage="memory_released", message=check.detail))
        return Released(
            released=check.released,
            verified=check.verified,
            unloaded_model=unloaded,
            detail=check.detail,
            memory_before_mib=used_mib(before),
            memory_after_mib=used_mib(gpu_memory_snapshot()),
            stats=self.snapshot(),
        )

    def gpu_memory_back(self) -> MemoryCheck:
        """After an unload: is the GPU memory this process took back? (NVML, within tolerance)

        Nothing is read when no model of this process ran on a GPU, or none was loaded
        since NVML last confirmed it (another service's model may be on the GPU by now).
        A GPU whose memory NVML cannot read passes, unverified: the caller says so.
        """
        if not self._used_gpu:
            return MemoryCheck(True, "no model of this worker ran on a GPU", verified=False)
        if self.stats.loads == self._loads_when_memory_back:
            return MemoryCheck(True, "nothing loaded since the GPU memory was confirmed back")
        check = check_memory_released(self._memory_before_load, self.memory_tolerance)
        if check.released:
            self._loads_when_memory_back = self.stats.loads
        elif not self._memory_before_load:
            return MemoryCheck(True, check.detail, verified=False)
        return check

    def run(self, request: RunRequest, emit: Emit) -> FinalReply:
        """Load or reuse the model, measure, write result.json; never raises."""
        if not Path(request.out_dir).is_absolute():
            return self._failed(f"out_dir {request.out_dir!r} must be an absolute path")
        try:
            config = parse_experiment(request.config, request.config_source)
        except LemError as exc:
            return self._failed(str(exc))
        try:
            result = self.measure(config, request, emit)
            path = write_result(Path(request.out_dir), result)
        except ColdStartNotMade as exc:
            self.stats.failures += 1
            return NeedsRestart(cause=str(exc), stats=self.snapshot())
        except LemError as exc:
            return self._failed(str(exc))
        except Exception as exc:
            return self._failed_unexpectedly(exc, config, emit)
        self.stats.experiments += 1
        self.record_memory_held()
        return Done(
            result_path=str(path),
            model_reused=result.timing.model_reused,
            load_seconds=result.timing.load_seconds,
            stats=self.snapshot(),
        )

    def measure(
        self, config: ExperimentConfig, request: RunRequest, emit: Emit
    ) -> ExperimentResult:
        """Make room, load or reuse, then warmup and window as for any experiment."""
        if config.load.mode == "server":
            return self.measure_served(config, request, emit)
        warnings = self.make_room(config, request.cold_start, emit)
        cache = Path(request.baseline_cache) if request.baseline_cache else None

        def report(stage: str) -> None:
            emit(stage_progress(stage, config))

        # Idle power is measured while this worker holds no model (before the load), never
        # with one resident: a reused model reads the value cached then (measure/baseline.py).
        idle = idle_before_load(config, cache, report) if self.loaded is None else None
        model = self.ensure_loaded(config, request.cold_start, emit)
        result = measure_experiment(
            model,
            config,
            RunIdentity(**request.identity.model_dump()),
            baseline_cache=cache,
            gap_waited_seconds=request.gap_waited_seconds,
            gpu_knobs=request.gpu_knobs,
            progress=report,
            idle=idle,
        )
        result.warnings.extend(warnings)
        result.timing.runner = "worker"
        return result

    def measure_served(
        self, config: ExperimentConfig, request: RunRequest, emit: Emit
    ) -> ExperimentResult:
        """Start the engine's server or reuse the one up for this load key, drive it with
        the load generator, and build the result from the steady window."""
        started_at, clock = _utc_now(), time.perf_counter()
        if self.loaded is not None:  # one engine per GPU: the in-process model goes first
            self.unload(emit, "server mode: the engine's own server takes over")
        method = self._cold_start_method(request.cold_start)
        server, load_seconds = self.ensure_server(config, request.cold_start, emit)
        device = "cuda" if self._used_gpu else "cpu"
        gpu_indices, gpu_warnings = experiment_gpus(config, device)
        emit(stage_progress("window", config))
        try:
            run = run_load(config, server, Path(request.out_dir), gpu_indices)
        except LemError:
            if not server.alive():
                self.stop_server()  # the next experiment starts a fresh one
            raise
        emit(stage_progress("window_done", config))
        timing = Timing(
            started_at=started_at,
            finished_at=_utc_now(),
            load_seconds=load_seconds,
            model_reused=load_seconds == 0.0,
            cold_start_method=None if load_seconds == 0.0 else method,
            runner="worker",
            warmup_seconds=0.0,  # the warm-up requests are inside the load, before the window
            window_seconds=run.serving.window.seconds,
            total_seconds=time.perf_counter() - clock,
            gap_waited_seconds=request.gap_waited_seconds,
        )
        identity = RunIdentity(**request.identity.model_dump()).for_config(config)
        result = server_result(config, identity, run, device, timing)
        result.warnings[:0] = gpu_warnings
        return result

    def ensure_server(
        self, config: ExperimentConfig, cold_start: bool, emit: Emit
    ) -> tuple[ServerProcess, float]:
        """The server for `config`'s load key, and the seconds spent starting it (0: reused)."""
        key = load_key(config)
        up = self.server is not None and self.server.alive() and self.server_key == key
        if up and not cold_start:
            assert self.server is not None
            emit(Progress(stage="reusing", message=f"reusing the server ({describe(config)})"))
            return self.server, 0.0
        self.stop_server(emit, "cold start requested" if cold_start else f"load key {key}")
        self._used_gpu = self._used_gpu or bool(visible_gpu_indices())
        SERVER_DIR.mkdir(parents=True, exist_ok=True)
        device = "cuda" if self._used_gpu else "cpu"
        command = server_command(config, DEFAULT_PORT, device, SERVER_DIR)
        server = ServerProcess(command, DEFAULT_PORT, SERVER_DIR / "server.log")
        emit(
            Progress(
                stage="loading", message=f"starting {' '.join(command[:2])} ({describe(config)})"
            )
        )
        clock = time.perf_counter()
        server.start()
        self.server, self.server_key = server, key
        try:
            server.wait_ready(SERVER_READY_TIMEOUT_S)
        except LemError:
            self.stop_server()
            raise
        seconds = time.perf_counter() - clock
        self.stats.loads += 1
        self.stats.loaded_key, self.stats.loaded_model = key, config.model.path
        emit(Progress(stage="loaded", message=f"server up in {seconds:.2f} s on {device}"))
        return server, seconds

    def stop_server(self, emit: Emit | None = None, reason: str = "") -> None:
        server, self.server, self.server_key = self.server, None, None
        if server is None:
            return
        if emit is not None:
            emit(Progress(stage="unloading", message=f"stopping the server ({reason})"))
        server.stop()
        self.stats.loaded_key = self.stats.loaded_model = None

    def make_room(self, config: ExperimentConfig, cold_start: bool, emit: Emit) -> list[str]:
        """Unload what cannot serve `config`; check a cold start. Returns result warnings."""
        self.stop_server(emit, "an offline config: the model is loaded in this process")
        key = load_key(config)
        if self.loaded is not None and (cold_start or self.loaded.load_key != key):
            reason = "cold start requested" if cold_start else f"load key changes to {key}"
            self.unload(emit, reason)
        if not (cold_start and self._used_gpu):
            return []  # nothing loaded yet, or only on the CPU: dropping the model is enough
        check = self.gpu_memory_back()
        if not check.released:
            raise ColdStartNotMade(f"unloading did not release GPU memory: {check.detail}")
        if not check.verified:
            return [f"cold start by unloading not verified: {check.detail}"]
        emit(Progress(stage="memory_released", message=check.detail))
        return []

    def ensure_loaded(self, config: ExperimentConfig, cold_start: bool, emit: Emit) -> LoadedModel:
        """The resident model when it serves `config` (see `make_room`), else a fresh load."""
        if self.loaded is not None:
            emit(
                Progress(stage="reusing", message=f"reusing the loaded model ({describe(config)})")
            )
            return self.loaded
        method = self._cold_start_method(cold_start)
        emit(Progress(stage="loading", message=f"loading {describe(config)}"))
        model = self._load(config)
        model.cold_start_method = method
        self.loaded = model
        self._used_gpu = self._used_gpu or model.backend.device == "cuda"
        self.stats.loads += 1
        self.stats.loaded_key, self.stats.loaded_model = model.load_key, config.model.path
        self.record_memory_held()
        emit(
            Progress(
                stage="loaded",
                message=f"loaded in {model.load_seconds:.2f} s on {model.backend.device} "
                f"(load {self.stats.loads} of this worker, cold start: {method})",
            )
        )
        return model

    def _cold_start_method(self, cold_start: bool) -> ColdStartMethod:
        if self.stats.loads == 0:
            # Nothing was loaded in this process: it was started (or restarted) for this load.
            return "restart" if cold_start else "fresh_process"
        return "unload"

    def unload(self, emit: Emit | None = None, reason: str = "") -> None:
        """Drop the resident model or server and give its memory back (engine shutdown,
        gc, caches)."""
        self.stop_server(emit, reason)
        model, self.loaded = self.loaded, None
        self.stats.loaded_key = self.stats.loaded_model = None
        if model is not None:
            if emit is not None:
                emit(Progress(stage="unloading", message=f"unloading ({reason})"))
            model.backend.unload()
            del model
        release_cached_memory()
        self.record_memory_held()

    def record_memory_held(self) -> None:
        """Update `stats.gpu_memory_held_mib`, so that the health check between cycles
        counts only the memory this worker does not hold (measure/health.py)."""
        if self._used_gpu:
            held = memory_held_mib(self._memory_before_load, gpu_memory_snapshot())
            self.stats.gpu_memory_held_mib = held

    def _failed(self, cause: str) -> Failed:
        self.stats.failures += 1
        return Failed(cause=cause, stats=self.snapshot())

    def _failed_unexpectedly(self, exc: Exception, config: ExperimentConfig, emit: Emit) -> Failed:
        log.exception("experiment failed")
        if is_out_of_memory(exc):
            self.unload(emit, "out of memory")  # a half-run model may hold what the next needs
        return self._failed(describe_failure(exc, config))

    def stop(self) -> bool:
        """Refuse new runs; unload when idle. False when an experiment is still running."""
        self._stopping.set()
        if not self._run_lock.acquire(blocking=False):
            return False
        try:
            self.unload(reason="worker stopping")
        finally:
            self._run_lock.release()
        return True

    def serve_connection(self, connection: socket.socket) -> None:
        """Read one request from `connection`, answer it, close it."""
        with connection:
            channel = ClientChannel(connection)
            try:
                connection.settimeout(REQUEST_READ_TIMEOUT_S)
                line = read_line(connection.makefile("rb"))
                connection.settimeout(None)
                if not line:
                    return  # a probe that connected and left
                request = decode_request(line)
            except ProtocolError as exc:
                channel.send(Failed(cause=str(exc), stats=self.snapshot()))
                return
            except OSError as exc:
                log.warning("dropped a connection that sent no request: %s", exc)
                return
            final = self.handle(request, channel.send)
            log.info("%s: %s", _request_label(request), _outcome(final))
            channel.send(final)


class ClientChannel:
    """Sends messages to one client; a client that went away does not stop the experiment."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._gone = False

    def send(self, message: Progress | FinalReply) -> None:
        if self._gone:
            return
        try:
            send(self._connection, message)
        except OSError as exc:
            self._gone = True
            log.warning("client went away (%s): the experiment continues", exc)


def describe(config: ExperimentConfig) -> str:
    """What is loaded, for progress messages: model, backend, precision and load key."""
    key = load_key(config)
    return f"{config.model.path} ({config.backend}, {config.precision}, load key {key})"


STAGE_MESSAGES: dict[str, Callable[[ExperimentConfig], str]] = {
    "baseline": lambda c: f"idle baseline ({c.measurement.baseline_seconds:g} s unless cached)",
    "warmup": lambda c: f"warmup: {c.measurement.warmup_prompts} prompts",
    "window": lambda c: f"window started (at least {c.measurement.min_window_seconds:g} s)",
    "window_done": lambda c: "window done",
}


def stage_progress(stage: str, config: ExperimentConfig) -> Progress:
    message = STAGE_MESSAGES.get(stage, lambda c: stage)(config)
    return Progress(stage=stage, message=message)


def used_mib(snapshot: dict[int, tuple[float, float]]) -> dict[int, float]:
    """GPU index -> MiB used, from a `gpu_memory_snapshot`."""
    return {index: round(used, 1) for index, (used, _total) in sorted(snapshot.items())}


def _request_label(request: AnyRequest) -> str:
    if isinstance(request, StatusRequest | ReleaseRequest):
        return request.type
    return request.identity.exp_id or request.config_source


def _outcome(final: FinalReply) -> str:
    if isinstance(final, Done):
        reused = "reused model" if final.model_reused else f"loaded in {final.load_seconds:.2f} s"
        return f"done ({reused}) -> {final.result_path}"
    if isinstance(final, Failed | NeedsRestart):
        return f"{final.type}: {final.cause}"
    if isinstance(final, Released):
        return f"{'released' if final.released else 'NOT released'}: {final.detail}"
    return "answered"


def listen(path: Path) -> socket.socket:
    """A listening socket at `path` (parent created); a stale socket file is replaced."""
    check_socket_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_socket(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        raise WorkerError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return listener


def remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse a live worker's or a non-socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise WorkerError(f"{path} exists and is not a socket: choose another --socket")
    try:
        connect(path).close()
    except OSError:
        path.unlink(missing_ok=True)  # refused: the worker that made it is gone
        return
    raise WorkerError(f"another worker is already serving {path}")


def serve(worker: Worker, path: Path, on_ready: Callable[[], None] | None = None) -> str:
    """Accept connections until SIGTERM/SIGINT; each request is handled on its own thread.

    Returns the signal's name. The socket file is removed before returning.
    """
    listener = listen(path)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        listener.settimeout(ACCEPT_POLL_S)
        if on_ready is not None:
            on_ready()
        while True:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(
                target=worker.serve_connection, args=(connection,), name="lem-request", daemon=True
            ).start()
    except StopWorker as stop:
        return str(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()
        path.unlink(missing_ok=True)


def _raise_stop(signum: int, frame: FrameType | None) -> Any:
    raise StopWorker(signal.Signals(signum).name)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
