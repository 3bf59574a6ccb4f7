"""The per-host manifest: which experiments ran, with which config, and how it went.

Writes are atomic (temp file, fsync, ``os.replace``, fsync of the directory) and
serialized by ``fcntl.flock`` on ``<manifest>.lock``, so a kill at any instant
leaves either the old or the new manifest, and two runs cannot interleave. A
manifest that does not parse is never overwritten: loading it raises a
``ManifestError`` naming the file. See docs/architecture.md ("Manifest").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from llenergymeasure.contracts.identity import safe_name_problem
from llenergymeasure.errors import ManifestError, ManifestLockError
from llenergymeasure.files import atomic_write_bytes, temp_files_of

MANIFEST_VERSION = 1

Status = Literal["pending", "running", "completed", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)
Reason = Literal["new", "completed", "interrupted", "failed-retry", "failed-kept", "config-changed"]


@dataclass(frozen=True)
class ManifestEntry:
    """One experiment of this host's share of the campaign.

    Plain data, checked by hand when read (`entry_from_json`): the manifest is read and
    written by host-side tasks, which import no pydantic.
    """

    exp_id: str
    config_name: str
    config_hash: str
    backend: str
    service: str
    cycle: int
    status: Status = "pending"
    attempts: int = 0
    result_path: str | None = None  # relative to the state dir
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None


@dataclass
class Manifest:
    manifest_version: int = MANIFEST_VERSION
    # Empty only for a manifest not yet written; replace_entry fills both in.
    campaign_name: str = ""
    host: str = ""
    entries: dict[str, ManifestEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Invalid(ValueError):
    """Where (a key path) and what is wrong in a manifest file."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


_TEXT, _OPTIONAL_TEXT, _COUNT = (str,), (str, type(None)), (int,)
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "exp_id": _TEXT,
    "config_name": _TEXT,
    "config_hash": _TEXT,
    "backend": _TEXT,
    "service": _TEXT,
    "cycle": _COUNT,
    "status": _TEXT,
    "attempts": _COUNT,
    "result_path": _OPTIONAL_TEXT,
    "started_at": _OPTIONAL_TEXT,
    "completed_at": _OPTIONAL_TEXT,
    "error": _OPTIONAL_TEXT,
}
_REQUIRED = ("exp_id", "config_name", "config_hash", "backend", "service", "cycle")
_MINIMUMS = {"cycle": 1, "attempts": 0}


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(where, f"expected an object, found {type(value).__name__}")
    return value


def _entry_from_json(key: str, raw: Any) -> ManifestEntry:
    data = _object(raw, f"entries.{key}")
    if extra := sorted(data.keys() - _ENTRY_TYPES.keys()):
        raise _Invalid(f"entries.{key}.{extra[0]}", "extra key, not permitted")
    for name in _REQUIRED:
        if name not in data:
            raise _Invalid(f"entries.{key}.{name}", "missing")
    for name, value in data.items():
        where = f"entries.{key}.{name}"
        types = _ENTRY_TYPES[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise _Invalid(where, f"{value!r} is not of type {'/'.join(t.__name__ for t in types)}")
        if name in _MINIMUMS and value < _MINIMUMS[name]:
            raise _Invalid(where, f"{value} is less than {_MINIMUMS[name]}")
    if data.get("status", "pending") not in STATUSES:
        raise _Invalid(f"entries.{key}.status", f"{data['status']!r} is not one of {STATUSES}")
    if problem := safe_name_problem(data["exp_id"]):
        raise _Invalid(f"entries.{key}.exp_id", problem)
    if key != data["exp_id"]:
        raise _Invalid(f"entries.{key}", f"holds exp_id {data['exp_id']!r}")
    return ManifestEntry(**data)


def _manifest_from_json(raw: bytes) -> Manifest:
    try:
        data = _object(json.loads(raw), "(top level)")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Invalid("(top level)", f"Invalid JSON: {exc}") from None
    if extra := sorted(data.keys() - {"manifest_version", "campaign_name", "host", "entries"}):
        raise _Invalid(extra[0], "extra key, not permitted")
    version = data.get("manifest_version", MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        raise _Invalid("manifest_version", f"{version!r} is not {MANIFEST_VERSION}")
    for name in ("campaign_name", "host"):
        if not isinstance(data.get(name, ""), str):
            raise _Invalid(name, f"{data[name]!r} is not a string")
    entries = _object(data.get("entries", {}), "entries")
    return Manifest(
        campaign_name=data.get("campaign_name", ""),
        host=data.get("host", ""),
        entries={key: _entry_from_json(key, raw) for key, raw in entries.items()},
    )


@dataclass(frozen=True)
class Decision:
    """Whether to run an experiment on this pass; `detail` is the sentence to report."""

    run: bool
    reason: Reason
    detail: str


def load_manifest(path: str | Path) -> Manifest:
    """The manifest at `path`; an empty one when the file does not exist yet."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    try:
        return _manifest_from_json(raw)
    except _Invalid as exc:
        raise ManifestError(
            f"{path}: not a valid manifest (version {MANIFEST_VERSION}): {exc}; "
            "the file was left as it is: repair or remove it"
        ) from None


def save_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write `manifest` atomically. Callers hold `manifest_lock(path, ...)`."""
    path = Path(path)
    try:
        atomic_write_bytes(path, json.dumps(manifest.to_json(), indent=1).encode("utf-8"))
    except OSError as exc:
        raise ManifestError(
            f"{path}: cannot write manifest: {exc.strerror or exc}; the previous manifest is intact"
        ) from None


def _read_holder_pid(lock_path: Path) -> str:
    try:
        return lock_path.read_text(encoding="ascii").strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _remove_stale_temp_files(path: Path) -> None:
    # Only a writer killed between creating its temp file and the rename leaves one;
    # with the lock held no other writer exists, so whatever is there is stale.
    for stale in temp_files_of(path):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _acquire(fd: int, path: Path, campaign: str, timeout: float, poll_interval: float) -> None:
    deadline = time.monotonic() + timeout
    while not _try_flock(fd):
        if time.monotonic() >= deadline:
            raise ManifestLockError(
                f"campaign {campaign!r}: manifest {path} is locked by pid "
                f"{_read_holder_pid(Path(f'{path}.lock'))}"
            )
        time.sleep(poll_interval)


@contextlib.contextmanager
def manifest_lock(
    path: str | Path, campaign: str, timeout: float = 30.0, poll_interval: float = 0.05
) -> Iterator[None]:
    """Hold the exclusive lock of the manifest at `path`, waiting up to `timeout` seconds.

    The lock file holds the holder's pid, for the message a refused writer gets.
    """
    path = Path(path)
    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ManifestError(f"{lock_path}: cannot open lock file: {exc.strerror}") from None
    try:
        _acquire(fd, path, campaign, timeout, poll_interval)
        # The pid is only for the message a refused writer gets: on a full disk the
        # lock still holds, and the manifest write itself reports the problem.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _remove_stale_temp_files(path)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def check_owner(manifest: Manifest, path: str | Path, campaign: str, host: str) -> None:
    """A manifest of another campaign or host must neither decide nor record this one's work."""
    for key, wanted in (("campaign_name", campaign), ("host", host)):
        found = getattr(manifest, key)
        if found and found != wanted:
            raise ManifestError(f"{path}: {key} is {found!r}, not {wanted!r}: refusing to mix")


def _claim(manifest: Manifest, path: Path, campaign: str, host: str) -> Manifest:
    """`manifest` stamped with its owner; another campaign's or host's manifest is refused."""
    check_owner(manifest, path, campaign, host)
    return replace(manifest, campaign_name=campaign, host=host)


class ManifestConflict(ManifestError):
    """The entry to replace is no longer the one the caller read: nothing was written."""


def replace_entry(
    path: str | Path,
    campaign: str,
    host: str,
    expected: ManifestEntry | None,
    entry: ManifestEntry,
    timeout: float = 30.0,
) -> ManifestEntry:
    """Under the lock: load, set `entry.exp_id`'s entry, save, if it still is `expected`.

    The one way an entry is written (`expected` None: there is none yet). An attempt
    records its start and its outcome this way, so that an attempt left running by a
    killed controller can never overwrite the entry of a newer attempt (or a newer
    attempt the outcome of an older one it did not see). Raises ManifestConflict,
    writing nothing, when the entry changed since it was read.
    """
    path = Path(path)
    with manifest_lock(path, campaign, timeout=timeout):
        manifest = _claim(load_manifest(path), path, campaign, host)
        current = manifest.entries.get(entry.exp_id)
        if current != expected:
            raise ManifestConflict(
                f"{path}: entry {entry.exp_id} changed since it was read (now "
                f"{_describe(current)}, expected {_describe(expected)}): not overwritten"
            )
        manifest.entries[entry.exp_id] = entry
        save_manifest(path, manifest)
    return entry


def _describe(entry: ManifestEntry | None) -> str:
    if entry is None:
        return "absent"
    return f"{entry.status}, attempt {entry.attempts}, started {entry.started_at}"


def decide(entry: ManifestEntry | None, config_hash: str, retry_failed: bool) -> Decision:
    """Resume rule for one experiment, given its manifest entry (None: never seen)."""
    if entry is None or entry.status == "pending":
        return Decision(True, "new", "not run yet")
    if entry.config_hash != config_hash:
        return Decision(
            True,
            "config-changed",
            f"config hash changed from {entry.config_hash} to {config_hash}: running again",
        )
    if entry.status == "completed":
        return Decision(False, "completed", f"completed at {entry.completed_at}: skipped")
    if entry.status == "running":
        return Decision(True, "interrupted", f"attempt {entry.attempts} was interrupted")
    if retry_failed:
        return Decision(True, "failed-retry", f"failed before ({entry.error}): retrying")
    return Decision(False, "failed-kept", f"failed before ({entry.error}): kept, not retried")


def summarize(manifest: Manifest) -> dict[str, int]:
    """Number of entries per status, every status present."""
    counts = dict.fromkeys(STATUSES, 0)
    for entry in manifest.entries.values():
        counts[entry.status] += 1
    return counts


def move_aside(results_dir: str | Path, exp_id: str) -> Path | None:
    """Rename a previous attempt's `results/<exp_id>` to `<exp_id>.interrupted-<n>`.

    Called before an experiment runs again, so partial output is never mixed in.
    Returns the new path, or None when there was nothing to move.
    """
    results_dir = Path(results_dir)
    if safe_name_problem(exp_id) is not None:
        raise ManifestError(f"{results_dir}: exp_id {exp_id!r} is not a safe name")
    source = results_dir / exp_id
    if not source.exists():
        return None
    n = 1
    while (results_dir / f"{exp_id}.interrupted-{n}").exists():
        n += 1
    target = results_dir / f"{exp_id}.interrupted-{n}"
    try:
        os.rename(source, target)
    except OSError as exc:
        raise ManifestError(f"{source}: cannot move aside to {target}: {exc.strerror}") from None
    return target
