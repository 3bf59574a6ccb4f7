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
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from llenergymeasure.config.models import SafeName
from llenergymeasure.errors import ManifestError, ManifestLockError
from llenergymeasure.files import atomic_write_bytes, temp_files_of

MANIFEST_VERSION = 1

Status = Literal["pending", "running", "completed", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)
Reason = Literal["new", "completed", "interrupted", "failed-retry", "failed-kept", "config-changed"]

_SAFE_EXP_ID: TypeAdapter[str] = TypeAdapter(SafeName)


class ManifestEntry(BaseModel):
    """One experiment of this host's share of the campaign."""

    model_config = ConfigDict(extra="forbid")

    exp_id: SafeName
    config_name: str
    config_hash: str
    backend: str
    service: str
    cycle: int = Field(ge=1)
    status: Status = "pending"
    attempts: int = Field(0, ge=0)
    result_path: str | None = Field(None, description="Relative to the state dir")
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_version: Literal[1] = MANIFEST_VERSION
    # Empty only for a manifest not yet written; replace_entry fills both in.
    campaign_name: str = ""
    host: str = ""
    entries: dict[str, ManifestEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_are_exp_ids(self) -> Manifest:
        for key, entry in self.entries.items():
            if key != entry.exp_id:
                raise ValueError(f"entries.{key}: holds exp_id {entry.exp_id!r}")
        return self


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
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ManifestError(
            f"{path}: not a valid manifest (version {MANIFEST_VERSION}): {where}: {first['msg']}; "
            "the file was left as it is: repair or remove it"
        ) from None


def save_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write `manifest` atomically. Callers hold `manifest_lock(path, ...)`."""
    path = Path(path)
    try:
        atomic_write_bytes(path, manifest.model_dump_json(indent=1).encode("utf-8"))
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
    for field, wanted in (("campaign_name", campaign), ("host", host)):
        found = getattr(manifest, field)
        if found and found != wanted:
            raise ManifestError(f"{path}: {field} is {found!r}, not {wanted!r}: refusing to mix")


def _claim(manifest: Manifest, path: Path, campaign: str, host: str) -> Manifest:
    """`manifest` stamped with its owner; another campaign's or host's manifest is refused."""
    check_owner(manifest, path, campaign, host)
    return manifest.model_copy(update={"campaign_name": campaign, "host": host})


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
    try:
        _SAFE_EXP_ID.validate_python(exp_id)
    except ValidationError:
        raise ManifestError(f"{results_dir}: exp_id {exp_id!r} is not a safe name") from None
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
