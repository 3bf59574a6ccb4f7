"""Leases held by an `ansible-playbook` process, and the per-host lock built on them.

Standard library only: besides the package, this file is shipped to hosts as the
Ansible module_utils `lem_lease` (playbooks/module_utils/lem_lease.py links here), so
`library/lem_host_lock.py` runs with the host's system Python before this package's
venv exists there, and the host side stays free of pydantic.

A lease is a small JSON file naming its holder: the controller's hostname, the pid of
its `ansible-playbook` and that process's start time (a reused pid is told apart).
It is read and written under `fcntl.flock` on the file itself, held for the decision
only, so two runs starting at the same instant cannot both win. A free lease is an
empty file, never a removed one: removing it would let a waiting process write into
an unlinked inode. See docs/reliability.md ("Two runs of one campaign", "Two
campaigns on one host").
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CONTROLLER_PROGRAM = "ansible-playbook"
HOST_LOCK_NAME = "host.lock"
HOLDER_KEYS = ("campaign", "controller", "pid", "start_ticks")
_PROC = Path("/proc")

Holder = dict[str, Any]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None when there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return text.rpartition(")")[2].split()


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot: with the pid, names one process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def command_line(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def is_controller(argv: list[str] | None) -> bool:
    """Whether `argv` is `ansible-playbook` (run directly, or as `python .../ansible-playbook`)."""
    return bool(argv) and any(Path(arg).name == CONTROLLER_PROGRAM for arg in argv[:2])


def controller_pid(pid: int | None = None) -> int | None:
    """The `ansible-playbook` main process above `pid` (default: this process), if any.

    Ansible's workers are forks of the main process, with its command line, so this is
    the topmost `ansible-playbook` among the ancestors, not the nearest.
    """
    found = None
    current = pid if pid is not None else os.getpid()
    while current > 0:
        if is_controller(command_line(current)):
            found = current
        current = parent_pid(current) or 0
    return found


def holder_running(controller: str, pid: int, ticks: int | None) -> bool:
    """Whether the `ansible-playbook` named by (controller, pid, ticks) still runs.

    A holder on another machine cannot be checked from here: it counts as running.
    """
    if controller != socket.gethostname():
        return True
    if not is_controller(command_line(pid)):
        return False
    return ticks is None or start_ticks(pid) == ticks


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def locked_file(path: Path) -> Iterator[int]:
    """The lease file's descriptor, with an exclusive flock held for a short decision.

    OSError when the file cannot be made or opened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for microseconds by whoever has it
        yield fd
    finally:
        os.close(fd)


def read_text(fd: int) -> str:
    return os.pread(fd, 65536, 0).decode("utf-8", "replace")


def write_text(fd: int, text: str) -> None:
    """Replace the lease's content (empty: free), durably. OSError on failure."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)
    os.fsync(fd)


# The host lock: one campaign at a time on a host, across campaigns.


def _parse_holder(text: str) -> Holder | None:
    """The holder recorded in a host lock; None when free or half-written (nobody holds it)."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or any(key not in data for key in HOLDER_KEYS):
        return None
    return data


def read_host_lock(path: Path) -> Holder | None:
    """The holder of the host lock at `path`, read without writing anything."""
    try:
        return _parse_holder(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def is_same_run(holder: Holder, wanted: Holder) -> bool:
    return all(holder.get(key) == wanted.get(key) for key in HOLDER_KEYS)


def _age_seconds(holder: Holder, now: datetime) -> float | None:
    try:
        since = datetime.fromisoformat(str(holder.get("acquired_at")))
    except ValueError:
        return None
    return (now - since).total_seconds()


def stale_reason(
    holder: Holder, wanted: Holder, max_age_seconds: float, now: datetime
) -> str | None:
    """Why `wanted` may take the lock over from `holder`, or None while it is held.

    The same campaign from the same controller is a re-run after a crash (the
    controller's run lock lets only one run of a campaign go at a time).
    """
    if holder["campaign"] == wanted["campaign"] and holder["controller"] == wanted["controller"]:
        return f"campaign {holder['campaign']!r} is run again from {holder['controller']}"
    if not holder_running(holder["controller"], holder["pid"], holder["start_ticks"]):
        return f"its ansible-playbook pid {holder['pid']} on {holder['controller']} is gone"
    age = _age_seconds(holder, now)
    if max_age_seconds > 0 and age is not None and age > max_age_seconds:
        return f"it is {age:.0f} s old, over the limit of {max_age_seconds:g} s"
    return None


def describe_holder(holder: Holder) -> str:
    return (
        f"campaign {holder['campaign']!r} (controller {holder['controller']}, "
        f"ansible-playbook pid {holder['pid']}, since {holder.get('acquired_at', '?')})"
    )


def take_host_lock(
    path: Path,
    wanted: Holder,
    max_age_seconds: float = 0,
    dry_run: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Try to make `wanted` the holder of the host lock at `path`.

    Returns `status` (acquired, already-held, taken-over or held: refused), the
    `holder` after the call, `previous` and, for a take-over, `reason`. `dry_run`
    decides the same way and writes nothing. OSError when the file cannot be used.
    """
    now = now or datetime.now(UTC)
    if dry_run:
        return _decide(read_host_lock(path), wanted, max_age_seconds, now)
    with locked_file(path) as fd:
        outcome = _decide(_parse_holder(read_text(fd)), wanted, max_age_seconds, now)
        if outcome["status"] in ("acquired", "taken-over"):
            write_text(fd, json.dumps(outcome["holder"]) + "\n")
    return outcome


def _decide(
    previous: Holder | None, wanted: Holder, max_age_seconds: float, now: datetime
) -> dict[str, Any]:
    if previous is not None and is_same_run(previous, wanted):
        return {"status": "already-held", "holder": previous, "previous": previous, "reason": None}
    fresh = dict(wanted, acquired_at=now.isoformat(timespec="seconds"))
    if previous is None:
        return {"status": "acquired", "holder": fresh, "previous": None, "reason": None}
    reason = stale_reason(previous, wanted, max_age_seconds, now)
    if reason is None:
        return {"status": "held", "holder": previous, "previous": previous, "reason": None}
    return {"status": "taken-over", "holder": fresh, "previous": previous, "reason": reason}


def release_host_lock(path: Path, wanted: Holder) -> bool:
    """Empty the host lock at `path` when `wanted` holds it; True when it was released."""
    if not path.exists():
        return False
    with locked_file(path) as fd:
        holder = _parse_holder(read_text(fd))
        if holder is None or not is_same_run(holder, wanted):
            return False
        write_text(fd, "")
    return True
