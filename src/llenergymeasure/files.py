"""Crash-safe file writes: a kill at any instant leaves either the old or the new file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (e.g. near a full disk): loop until done."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (the new directory entry reaches the disk)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    """Keep the mode of the file being replaced; a new file gets rw-r--r-- (mkstemp gives 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o644


def temp_files_of(path: Path) -> list[Path]:
    """Temp files `atomic_write_bytes` made for `path`; left behind only by a killed writer."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temp file beside `path`, fsync it, rename it over `path`, fsync the dir.

    The file gets `mode` when given, else the mode of the file it replaces (0644 when new).
    On any error the temp file is removed, `path` keeps its old content, and the
    error (an OSError such as ENOSPC) propagates for the caller to name the file.
    """
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, _mode_for(path) if mode is None else mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)
