"""The worker's wire format: newline-delimited JSON messages over a Unix socket.

One connection carries one request. The client sends one line (a `RunRequest`, a
`StatusRequest` or a `ReleaseRequest`); the worker answers with any number of
`Progress` lines and ends with exactly one final message (`Done`, `Failed`,
`NeedsRestart`, `StatusReply` or `Released`), then closes the connection. Every
message is a JSON object whose `type` names it.

This module imports only pydantic and the standard library: the thin client uses it
without importing torch or an engine. See docs/worker.md.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from llenergymeasure.errors import LemError

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = Path("/run/lem/worker.sock")
SOCKET_ENV = "LEM_WORKER_SOCKET"
# A request carries one config: far below this. The cap stops a stray peer exhausting memory.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
CONNECT_TIMEOUT_S = 5.0
# A status request is answered at once: a worker silent this long is frozen.
STATUS_REPLY_TIMEOUT_S = 5.0


class WorkerError(LemError):
    """The worker cannot start, or a client cannot talk to it."""


class ProtocolError(WorkerError):
    """A peer sent something that is not a message of this protocol, or hung up early."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestIdentity(Message):
    """The fields of `runner.experiment.RunIdentity`, as sent by the client."""

    exp_id: str | None = None
    campaign_name: str | None = None
    config_hash: str | None = None
    cycle: int | None = None
    host: str | None = None


class RunRequest(Message):
    type: Literal["run"] = "run"
    protocol: int = PROTOCOL_VERSION
    config: dict[str, Any] = Field(description="The ExperimentConfig as JSON values")
    config_source: str = Field(description="Where the config came from, for error messages")
    out_dir: str = Field(description="Absolute directory for result.json")
    identity: RequestIdentity = RequestIdentity()
    cold_start: bool = False
    baseline_cache: str | None = None
    gap_waited_seconds: float | None = Field(default=None, ge=0.0)
    gpu_knobs: list[dict[str, Any]] = Field(
        default_factory=list, description="GPU knobs the host set (contracts/result.py GpuKnob)"
    )


class StatusRequest(Message):
    """The worker's statistics; answered on the request's own thread, so a worker busy
    measuring still answers (one that does not is frozen: docs/reliability.md)."""

    type: Literal["status"] = "status"
    cancel: str | None = Field(
        default=None,
        description="exp_id to stop first: the one being measured stops at its next stage, "
        "one waiting its turn never starts (a run past its timeout)",
    )


class WorkerStats(Message):
    """What the worker has done since it started; returned with every final message."""

    pid: int
    started_at: str
    loads: int = Field(default=0, description="Successful model loads by this process")
    experiments: int = Field(default=0, description="Experiments that wrote result.json")
    failures: int = 0
    loaded_key: str | None = None
    loaded_model: str | None = None
    busy_with: str | None = Field(default=None, description="Experiment being measured, if any")
    gpu_memory_held_mib: dict[int, float] = Field(
        default_factory=dict,
        description="GPU index -> MiB this worker holds (model, caches, CUDA context): "
        "memory used after its last load, experiment or unload minus before its first load",
    )


class Progress(Message):
    type: Literal["progress"] = "progress"
    stage: str
    message: str


class Done(Message):
    type: Literal["done"] = "done"
    result_path: str
    model_reused: bool
    load_seconds: float
    stats: WorkerStats


class Failed(Message):
    type: Literal["error"] = "error"
    cause: str = Field(description="One line, shown to the user as it is")
    stats: WorkerStats


class NeedsRestart(Message):
    """A cold start that unloading could not make: restart the service and ask again."""

    type: Literal["needs_restart"] = "needs_restart"
    cause: str
    stats: WorkerStats


class StatusReply(Message):
    type: Literal["status"] = "status"
    stats: WorkerStats


class ReleaseRequest(Message):
    """Give the GPU to another service of the lane: unload, then check through NVML."""

    type: Literal["release"] = "release"


class Released(Message):
    """The answer to a release: whether the GPU memory of this worker is back."""

    type: Literal["released"] = "released"
    released: bool = Field(
        description="No model resident and the GPU memory back within the cold-start "
        "tolerance; false: only a restart of the service frees it"
    )
    verified: bool = Field(description="NVML confirmed it (false on the CPU: nothing to check)")
    unloaded_model: str | None = Field(description="The model this release unloaded, if any")
    detail: str
    memory_before_mib: dict[int, float] = Field(
        description="GPU index -> MiB used on the GPU before the release"
    )
    memory_after_mib: dict[int, float] = Field(description="The same after it")
    stats: WorkerStats


AnyRequest = RunRequest | StatusRequest | ReleaseRequest
Request = Annotated[AnyRequest, Field(discriminator="type")]
Reply = Annotated[
    Progress | Done | Failed | NeedsRestart | StatusReply | Released, Field(discriminator="type")
]
FinalReply = Done | Failed | NeedsRestart | StatusReply | Released
REQUEST_ADAPTER: TypeAdapter[AnyRequest] = TypeAdapter(Request)
REPLY_ADAPTER: TypeAdapter[Progress | FinalReply] = TypeAdapter(Reply)


def socket_path(option: Path | None = None) -> Path:
    """The worker socket: `option`, else $LEM_WORKER_SOCKET, else /run/lem/worker.sock."""
    if option is not None:
        return option
    from_env = os.environ.get(SOCKET_ENV)
    return Path(from_env) if from_env else DEFAULT_SOCKET


def check_socket_path(path: Path) -> None:
    """Unix socket paths are short: say so before bind/connect fail with a vague error."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ProtocolError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes: choose a shorter one"
        )


def connect(path: Path, timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """A socket connected to the worker at `path`, blocking (no timeout) once connected.

    Raises FileNotFoundError when there is no socket file, ConnectionRefusedError when
    nothing listens on it (a stale file).
    """
    check_socket_path(path)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(timeout)
        connection.connect(os.fspath(path))
        connection.settimeout(None)
    except BaseException:
        connection.close()
        raise
    return connection


def encode(message: Message) -> bytes:
    """One message as one line (JSON never contains a raw newline)."""
    return message.model_dump_json().encode("utf-8") + b"\n"


def send(connection: socket.socket, message: Message) -> None:
    connection.sendall(encode(message))


def read_line(stream: Any) -> bytes:
    """The next line of a binary stream (without the newline); b'' at end of stream."""
    line = stream.readline(MAX_MESSAGE_BYTES + 1)
    if len(line) > MAX_MESSAGE_BYTES and not line.endswith(b"\n"):
        raise ProtocolError(f"message longer than {MAX_MESSAGE_BYTES} bytes")
    return line.rstrip(b"\n")


def decode_request(line: bytes) -> AnyRequest:
    """A request; one of another protocol version is refused before its fields are read."""
    data = _parse_json(line, "request")
    version = data.get("protocol", PROTOCOL_VERSION) if isinstance(data, dict) else None
    if version not in (None, PROTOCOL_VERSION):
        raise ProtocolError(
            f"the client speaks worker protocol {version!r}, this worker {PROTOCOL_VERSION}: "
            "use the same lem version on both sides"
        )
    return _validate(REQUEST_ADAPTER, data, "request")


def decode_reply(line: bytes) -> Progress | FinalReply:
    return _validate(REPLY_ADAPTER, _parse_json(line, "reply"), "reply")


def _parse_json(line: bytes, what: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not a worker {what}: not JSON ({exc})") from None


def _validate(adapter: TypeAdapter[Any], data: Any, what: str) -> Any:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ProtocolError(f"not a worker {what}: {detail}") from None
