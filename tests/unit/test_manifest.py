"""The manifest: round trips, refusal of corrupt files, disk errors, resume rules."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from llenergymeasure.errors import ManifestError
from llenergymeasure.files import temp_files_of
from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    decide,
    load_manifest,
    manifest_lock,
    move_aside,
    replace_entry,
    save_manifest,
    summarize,
)


def entry(cycle: int = 1, **changes: object) -> ManifestEntry:
    base = ManifestEntry(
        exp_id=f"demo__tiny__c{cycle:02d}",
        config_name="tiny",
        config_hash="aaaa000011112222",
        backend="pytorch",
        service="pytorch",
        cycle=cycle,
    )
    return replace(base, **changes)


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    return tmp_path / "manifest.json"


def test_missing_manifest_loads_empty(manifest_path: Path) -> None:
    assert load_manifest(manifest_path) == Manifest()
    assert not manifest_path.exists()


def put(path: Path, new: ManifestEntry, campaign: str = "demo", host: str = "localhost") -> None:
    """Write `new` with the production call, expecting what the file holds now."""
    current = load_manifest(path).entries.get(new.exp_id)
    replace_entry(path, campaign, host, current, new)


def test_replace_entry_returns_the_entry_and_persists(manifest_path: Path) -> None:
    running = entry(status="running", attempts=1, started_at="2025-01-06T09:00:00+00:00")
    assert replace_entry(manifest_path, "demo", "localhost", None, running) == running
    done = replace(running, status="completed", result_path="results/x.json")
    assert replace_entry(manifest_path, "demo", "localhost", running, done) == done

    loaded = load_manifest(manifest_path)
    assert (loaded.campaign_name, loaded.host) == ("demo", "localhost")
    assert loaded.entries == {done.exp_id: done}
    assert json.loads(manifest_path.read_text())["manifest_version"] == 1


def test_update_keeps_other_entries(manifest_path: Path) -> None:
    for cycle in (1, 2, 3):
        put(manifest_path, entry(cycle))
    put(manifest_path, entry(2, status="failed", error="OOM"))
    statuses = {e.cycle: e.status for e in load_manifest(manifest_path).entries.values()}
    assert statuses == {1: "pending", 2: "failed", 3: "pending"}


@pytest.mark.parametrize(
    ("campaign", "host", "field"),
    [("other", "localhost", "campaign_name"), ("demo", "gpu7", "host")],
)
def test_another_campaigns_or_hosts_manifest_is_refused(
    manifest_path: Path, campaign: str, host: str, field: str
) -> None:
    put(manifest_path, entry())
    before = manifest_path.read_bytes()
    with pytest.raises(ManifestError, match=f"{manifest_path}: {field} is"):
        put(manifest_path, entry(2), campaign, host)
    assert manifest_path.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"manifest_version": 1, "campaign_name": "demo", "entr', "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b'{"manifest_version": 2, "entries": {}}', "manifest_version"),
        (b'{"manifest_version": 1, "entries": []}', "entries"),
        (b'{"manifest_version": 1, "extra": 1}', "extra"),
    ],
)
def test_corrupt_manifest_is_named_and_never_overwritten(
    manifest_path: Path, content: bytes, problem: str
) -> None:
    manifest_path.write_bytes(content)
    with pytest.raises(ManifestError, match=problem) as raised:
        load_manifest(manifest_path)
    assert str(raised.value).startswith(f"{manifest_path}: not a valid manifest")
    with pytest.raises(ManifestError, match=str(manifest_path)):
        replace_entry(manifest_path, "demo", "localhost", None, entry())
    assert manifest_path.read_bytes() == content


def test_entry_stored_under_another_exp_id_is_rejected(manifest_path: Path) -> None:
    stored = Manifest(entries={entry().exp_id: entry()}).to_json()
    stored["entries"]["demo__tiny__c09"] = stored["entries"].pop(entry().exp_id)
    manifest_path.write_text(json.dumps(stored))
    with pytest.raises(ManifestError, match="holds exp_id"):
        load_manifest(manifest_path)


@pytest.mark.parametrize("failing_call", ["write", "fsync"])
def test_disk_full_leaves_the_old_manifest_and_no_temp_file(
    manifest_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: str
) -> None:
    put(manifest_path, entry())
    before = manifest_path.read_bytes()

    def no_space(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, failing_call, no_space)
        with pytest.raises(ManifestError) as raised:
            put(manifest_path, entry(status="completed"))
    assert str(raised.value).startswith(f"{manifest_path}: cannot write manifest")
    assert "No space left on device" in str(raised.value)
    assert manifest_path.read_bytes() == before
    assert temp_files_of(manifest_path) == []


def test_save_keeps_the_file_mode(manifest_path: Path) -> None:
    save_manifest(manifest_path, Manifest())
    assert manifest_path.stat().st_mode & 0o777 == 0o644
    manifest_path.chmod(0o600)
    save_manifest(manifest_path, Manifest())
    assert manifest_path.stat().st_mode & 0o777 == 0o600


def test_lock_records_the_holder_and_clears_stale_temp_files(manifest_path: Path) -> None:
    stale = manifest_path.parent / f".{manifest_path.name}.killed.tmp"
    stale.write_text("{partial")
    lock_file = Path(f"{manifest_path}.lock")
    with manifest_lock(manifest_path, "demo"):
        assert lock_file.read_text() == f"{os.getpid()}\n"
        assert not stale.exists()
    assert lock_file.read_text() == ""


HASH = "aaaa000011112222"


@pytest.mark.parametrize(
    ("stored", "retry_failed", "run", "reason"),
    [
        (None, True, True, "new"),
        (entry(status="pending"), True, True, "new"),
        (entry(status="completed"), True, False, "completed"),
        (entry(status="running", attempts=1), True, True, "interrupted"),
        (entry(status="failed", error="OOM"), True, True, "failed-retry"),
        (entry(status="failed", error="OOM"), False, False, "failed-kept"),
        (entry(status="completed", config_hash="bbbb000011112222"), False, True, "config-changed"),
        (entry(status="failed", config_hash="bbbb000011112222"), False, True, "config-changed"),
    ],
)
def test_resume_decisions(
    stored: ManifestEntry | None, retry_failed: bool, run: bool, reason: str
) -> None:
    decision = decide(stored, HASH, retry_failed=retry_failed)
    assert (decision.run, decision.reason) == (run, reason)


def test_config_change_names_old_and_new_hash() -> None:
    decision = decide(entry(status="completed", config_hash="bbbb000011112222"), HASH, True)
    assert "bbbb000011112222" in decision.detail and HASH in decision.detail


def test_summarize_counts_every_status() -> None:
    entries = [entry(1, status="completed"), entry(2, status="completed"), entry(3)]
    manifest = Manifest(entries={e.exp_id: e for e in entries})
    assert summarize(manifest) == {"pending": 1, "running": 0, "completed": 2, "failed": 0}


def test_move_aside_numbers_each_interrupted_attempt(tmp_path: Path) -> None:
    exp_id = entry().exp_id
    assert move_aside(tmp_path, exp_id) is None
    for attempt in (1, 2):
        (tmp_path / exp_id).mkdir()
        (tmp_path / exp_id / "partial.txt").write_text(f"attempt {attempt}")
        moved = move_aside(tmp_path, exp_id)
        assert moved == tmp_path / f"{exp_id}.interrupted-{attempt}"
        assert (moved / "partial.txt").read_text() == f"attempt {attempt}"
    assert not (tmp_path / exp_id).exists()


@pytest.mark.parametrize("exp_id", ["../escape", "a/b", ".."])
def test_move_aside_refuses_unsafe_exp_ids(tmp_path: Path, exp_id: str) -> None:
    with pytest.raises(ManifestError, match="not a safe name"):
        move_aside(tmp_path / "results", exp_id)
