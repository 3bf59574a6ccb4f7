"""The one atomic writer (`llenergymeasure.files`): file mode and the fsync of the directory."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from llenergymeasure import files
from llenergymeasure.files import atomic_write_bytes, atomic_write_text, temp_files_of


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_is_world_readable_not_mkstemp_private(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"
    assert mode_of(path) == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "kept.json"
    atomic_write_text(path, "old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert (path.read_text(), mode_of(path)) == ("new", 0o600)


def test_an_explicit_mode_wins_over_the_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_bytes(path, b"new", mode=0o644)
    assert (path.read_bytes(), mode_of(path)) == (b"new", 0o644)


def test_the_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is durable only once the directory entry is synced: file first, then dir."""
    path = tmp_path / "synced.json"
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        synced.append(f"dir:{path.exists()}" if is_dir else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_text(path, "data")
    assert synced == ["file", "dir:True"]


def test_a_failed_write_skips_the_directory_fsync_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "full.json"
    atomic_write_text(path, "old")
    synced_dirs: list[Path] = []
    monkeypatch.setattr(files, "fsync_directory", synced_dirs.append)

    def no_space(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert temp_files_of(path) == []
    assert synced_dirs == []
