"""The thin client of `lem experiment`: hands one experiment to the running `lem worker`.

It imports neither torch nor an engine (nor runner.experiment): an experiment exec
costs the Python start-up and the config validation, while the worker keeps the
model loaded. The wire format is in protocol.py; see docs/worker.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.wire import (
    STATUS_REPLY_TIMEOUT_S,
    AnyRequest,
    Done,
    Failed,
    FinalReply,
    NeedsRestart,
    Progress,
    RequestIdentity,
    RunRequest,
    StatusReply,
    StatusRequest,
    WorkerError,
    WorkerStats,
    connect,
    decode_reply,
    read_line,
    send,
)

# sysexits.h EX_TEMPFAIL: the orchestration restarts the service and runs the experiment again.
EXIT_NEEDS_RESTART = os.EX_TEMPFAIL


class NoWorker(Exception):
    """No worker listens at the socket path: the experiment runs in this process instead."""


class NoReply(WorkerError):
    """The worker accepted the connection but did not answer in time: it is frozen."""


def connect_worker(path: Path) -> socket.socket:
    """A connection to the worker at `path`; NoWorker when there is none to talk to."""
    try:
        return connect(path)
    except FileNotFoundError:
        raise NoWorker(f"no worker socket at {path}") from None
    except ConnectionRefusedError:
        raise NoWorker(f"nothing listens on the worker socket {path} (stale file)") from None
    except OSError as exc:  # permissions, timeouts: a worker is there but unusable, say so
        raise WorkerError(f"cannot connect to the worker at {path}: {exc.strerror or exc}") from exc


def run_request(
    config: ExperimentConfig,
    config_source: Path,
    out_dir: Path,
    identity: RequestIdentity,
    *,
    cold_start: bool = False,
    baseline_cache: Path | None = None,
    gap_waited_seconds: float | None = None,
    gpu_knobs: list[dict[str, Any]] | None = None,
) -> RunRequest:
    """The request for one experiment; paths made absolute (the worker has its own cwd)."""
    return RunRequest(
        config=config.model_dump(mode="json"),
        config_source=str(config_source),
        out_dir=str(out_dir.absolute()),
        identity=identity,
        cold_start=cold_start,
        baseline_cache=None if baseline_cache is None else str(baseline_cache.absolute()),
        gap_waited_seconds=gap_waited_seconds,
        gpu_knobs=gpu_knobs or [],
    )


def exchange(
    connection: socket.socket,
    request: AnyRequest,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    reply_timeout: float | None = None,
) -> FinalReply:
    """Send `request`, pass each progress message on, return the final reply.

    With `reply_timeout`, NoReply when a message takes longer than that to come (a
    stopped process still accepts connections: the kernel queues them).
    """
    with connection:
        connection.settimeout(reply_timeout)
        send(connection, request)
        stream = connection.makefile("rb")
        while True:
            try:
                line = read_line(stream)
            except TimeoutError:
                raise NoReply(
                    f"the worker did not answer within {reply_timeout:g} s (frozen or stopped)"
                ) from None
            if not line:
                raise WorkerError(
                    "the worker closed the connection before answering "
                    "(it stopped or crashed: see the service's logs)"
                )
            reply = decode_reply(line)
            if not isinstance(reply, Progress):
                return reply
            on_progress(reply)


def run_on_worker(
    path: Path, request: RunRequest, on_progress: Callable[[Progress], None]
) -> Done | Failed | NeedsRestart:
    """Run `request` on the worker at `path` (NoWorker when none listens there)."""
    reply = exchange(connect_worker(path), request, on_progress)
    if isinstance(reply, StatusReply):
        raise WorkerError("the worker answered a run request with its status")
    return reply


def worker_status(
    path: Path, cancel: str | None = None, timeout: float = STATUS_REPLY_TIMEOUT_S
) -> WorkerStats:
    """The statistics of the worker at `path` (loads, experiments, loaded model), after
    asking it to stop experiment `cancel` if given; NoReply past `timeout` seconds."""
    reply = exchange(connect_worker(path), StatusRequest(cancel=cancel), reply_timeout=timeout)
    if isinstance(reply, Failed):
        raise WorkerError(f"the worker at {path} refused the status request: {reply.cause}")
    if not isinstance(reply, StatusReply):
        raise WorkerError(f"the worker at {path} answered a status request with {reply.type}")
    return reply.stats
