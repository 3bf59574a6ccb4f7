"""The manifest under SIGKILL and under a second writer, with real processes.

A forked writer applies numbered updates ("generations") to the manifest and
acknowledges each one on a pipe once `replace_entry` (the function every
attempt writes its entry with) has returned; it is killed
with SIGKILL at random moments. Generation g sets entry g % ENTRIES to attempts
= g, so any manifest on disk must be exactly the state after some generation u,
and u must be the last acknowledged generation or the one in flight.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llenergymeasure.errors import ManifestLockError
from llenergymeasure.files import temp_files_of
from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    load_manifest,
    replace_entry,
)

ENTRIES = 200  # large enough that a write takes long enough to be hit by a kill
KILLS = 30
_ACK = struct.Struct("<q")


def generation_entry(generation: int) -> ManifestEntry:
    slot = generation % ENTRIES
    return ManifestEntry(
        exp_id=f"demo__cfg{slot:03d}__c01",
        config_name=f"cfg{slot:03d}",
        config_hash=f"{generation:016x}",
        backend="pytorch",
        service="pytorch",
        cycle=1,
        status="completed",
        attempts=generation,
    )


def entry_before(generation: int) -> ManifestEntry | None:
    """What the manifest holds for `generation`'s slot just before that generation."""
    previous = generation - ENTRIES
    return generation_entry(previous) if previous >= 1 else None


def write_generation(path: Path, generation: int, timeout: float = 30.0) -> None:
    entry = generation_entry(generation)
    replace_entry(path, "demo", "localhost", entry_before(generation), entry, timeout=timeout)


def last_generation(manifest: Manifest) -> int:
    return max((e.attempts for e in manifest.entries.values()), default=0)


def assert_state_after(manifest: Manifest, generation: int) -> None:
    """The manifest is exactly the state after `generation` updates: no mix of two writes."""
    expected = {}
    for slot in range(ENTRIES):
        newest = generation - ((generation - slot) % ENTRIES)
        if newest >= 1:
            expected[generation_entry(newest).exp_id] = generation_entry(newest)
    assert manifest.entries == expected


def _write_generations(path: Path, ack_fd: int) -> None:
    generation = last_generation(load_manifest(path))
    while True:
        generation += 1
        write_generation(path, generation)
        os.write(ack_fd, _ACK.pack(generation))


def start_writer(path: Path) -> tuple[int, int]:
    """Fork a process that updates the manifest forever; returns (pid, ack read end)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(read_fd)
        try:
            _write_generations(path, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


def read_acks(read_fd: int, at_least: int | None = None) -> list[int]:
    """Acknowledged generations: until `at_least` arrived, or (None) until the writer is gone."""
    data = b""
    while at_least is None or len(data) < at_least * _ACK.size:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        data += chunk
    usable = len(data) - len(data) % _ACK.size
    return [value for (value,) in _ACK.iter_unpack(data[:usable])]


def test_sigkill_at_random_moments_leaves_old_or_new_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    rng = random.Random(20250106)
    acknowledged = 0
    for _ in range(KILLS):
        pid, read_fd = start_writer(path)
        acks = read_acks(read_fd, at_least=1)  # the writer is inside its update loop
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acks += read_acks(read_fd)
        os.close(read_fd)
        acknowledged = max([acknowledged, *acks])

        manifest = load_manifest(path)  # raises if the file is torn
        on_disk = last_generation(manifest)
        # Every acknowledged update survived; at most the one in flight is also there.
        assert acknowledged <= on_disk <= acknowledged + 1
        assert_state_after(manifest, on_disk)
        assert len(temp_files_of(path)) <= 1
        acknowledged = on_disk
    assert acknowledged >= KILLS


HOLD_LOCK = """
import sys
from llenergymeasure.host.manifest import manifest_lock
with manifest_lock(sys.argv[1], "demo"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_writer_is_refused_naming_campaign_and_holder_pid(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_generation(path, 1)
    before = path.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ManifestLockError) as refused:
            write_generation(path, 2, timeout=0.3)
        assert str(refused.value) == (
            f"campaign 'demo': manifest {path} is locked by pid {holder.pid}"
        )
        assert path.read_bytes() == before
    finally:
        holder.communicate(input="", timeout=30)
    assert holder.returncode == 0
    write_generation(path, 2, timeout=5)
    assert last_generation(load_manifest(path)) == 2
