"""The campaign run lock: one `ansible-playbook` run of a campaign at a time.

`results/<campaign>/run.lock` names the `ansible-playbook` process that runs the
campaign. The lock outlives the module that takes it (`lem_plan` exits at once), so
it is a lease held by a process id, not an open file: it is free when the file is
empty, when its holder is no longer running, or when the pid now belongs to another
process (the start time recorded with the pid tells a reused pid apart). Deciding
and writing happen under `fcntl.flock` on the file itself, so two runs starting at
the same instant cannot both win. The file is emptied, never removed, on release:
removing it would let a waiting process write into an unlinked inode.
See docs/reliability.md ("Two runs of one campaign").
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from llenergymeasure.errors import ManifestError, ManifestLockError
from llenergymeasure.lease import (
    holder_running,
    locked_file,
    read_text,
    start_ticks,
    write_text,
)

RUN_LOCK_NAME = "run.lock"

LockStatus = Literal["acquired", "already-held", "taken-over"]


class RunLockHolder(BaseModel):
    """What the lock file records about the run that holds it."""

    model_config = ConfigDict(extra="forbid")

    campaign: str
    pid: int
    start_ticks: int | None  # /proc/<pid>/stat field 22; None where there is no /proc
    controller: str  # hostname: a pid means nothing on another machine
    acquired_at: str


@dataclass(frozen=True)
class RunLockOutcome:
    """How the lock was obtained; `previous` is the stale holder that was replaced."""

    path: Path
    status: LockStatus
    holder: RunLockHolder
    previous: RunLockHolder | None = None

    def report_line(self) -> str | None:
        """A line for the plan report when something is worth saying, else None."""
        if self.status != "taken-over" or self.previous is None:
            return None
        return (
            f"{self.path}: took over the run lock of ansible-playbook pid {self.previous.pid} "
            f"(since {self.previous.acquired_at}), which is no longer running"
        )


def holder_for(campaign: str, pid: int) -> RunLockHolder:
    return RunLockHolder(
        campaign=campaign,
        pid=pid,
        start_ticks=start_ticks(pid),
        controller=socket.gethostname(),
        acquired_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def is_running(holder: RunLockHolder) -> bool:
    """Whether the run recorded in the lock is still going (elsewhere: counted as going)."""
    return holder_running(holder.controller, holder.pid, holder.start_ticks)


def is_same_process(holder: RunLockHolder, pid: int) -> bool:
    return (
        holder.controller == socket.gethostname()
        and holder.pid == pid
        and holder.start_ticks == start_ticks(pid)
    )


@contextmanager
def _locked_file(path: Path) -> Iterator[int]:
    """The lock file's descriptor, with an exclusive flock held for a short decision."""
    try:
        with locked_file(path) as fd:
            yield fd
    except OSError as exc:
        raise ManifestError(f"{path}: cannot open the run lock: {exc.strerror}") from None


def _read_holder(fd: int) -> RunLockHolder | None:
    """The recorded holder; None for an empty (free) or unreadable lock file."""
    return _parse_holder(read_text(fd))


def _parse_holder(raw: str) -> RunLockHolder | None:
    if not raw.strip():
        return None
    try:
        return RunLockHolder.model_validate_json(raw)
    except ValidationError:
        return None  # half-written by a run killed while taking it: nobody holds it


def _write_holder(fd: int, path: Path, holder: RunLockHolder | None) -> None:
    try:
        write_text(fd, holder.model_dump_json() + "\n" if holder is not None else "")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot write the run lock: {exc.strerror}") from None


def acquire_run_lock(path: str | Path, campaign: str, pid: int) -> RunLockOutcome:
    """Make `pid` (an `ansible-playbook` process) the holder of the run lock at `path`.

    Raises ManifestLockError naming the campaign, the holder's pid and the lock file
    when another run still holds it.
    """
    path = Path(path)
    with _locked_file(path) as fd:
        previous = _read_holder(fd)
        if previous is not None and is_same_process(previous, pid):
            return RunLockOutcome(path, "already-held", previous)
        if previous is not None and is_running(previous):
            where = (
                f"on controller {previous.controller} "
                if previous.controller != socket.gethostname()
                else ""
            )
            raise ManifestLockError(
                f"campaign {campaign!r} is already being run by ansible-playbook pid "
                f"{previous.pid} {where}(since {previous.acquired_at}; lock file {path}): "
                "wait for that run to end or stop it; the lock of a run that was killed "
                "is taken over by the next run"
            )
        holder = holder_for(campaign, pid)
        _write_holder(fd, path, holder)
    status: LockStatus = "taken-over" if previous is not None else "acquired"
    return RunLockOutcome(path, status, holder, previous)


def release_run_lock(path: str | Path, pid: int) -> bool:
    """Empty the lock at `path` when `pid` holds it; True when it was released."""
    path = Path(path)
    if not path.exists():
        return False
    with _locked_file(path) as fd:
        holder = _read_holder(fd)
        if holder is None or not is_same_process(holder, pid):
            return False
        _write_holder(fd, path, None)
    return True


def holds_run_lock(path: str | Path, pid: int) -> bool:
    """Whether `pid` holds the lock at `path`, read without a write (check mode)."""
    try:
        raw = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the run lock: {exc.strerror}") from None
    holder = _parse_holder(raw)
    return holder is not None and is_same_process(holder, pid)
