"""One manifest update at 10,000 entries: what each experiment pays for its bookkeeping.

An update takes the lock, loads and validates the whole manifest, replaces one
entry and writes it back atomically (temp file, fsync, rename, fsync of the
directory). Prints the median, min and max of several updates, and the split
between load and save. Figures only, no assertions. The fsyncs make the figure
depend on the disk: pass --dir to measure where the state directory will live.

    .venv/bin/python bench/bench_manifest.py [--entries 10000] [--updates 15] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    load_manifest,
    replace_entry,
    save_manifest,
)


def entry(index: int, status: str = "completed") -> ManifestEntry:
    return ManifestEntry(
        exp_id=f"bench__cfg{index // 5:05d}__c{index % 5 + 1:02d}",
        config_name=f"cfg{index // 5:05d}",
        config_hash=f"{index:016x}",
        backend="pytorch",
        service="pytorch",
        cycle=index % 5 + 1,
        status=status,  # type: ignore[arg-type]
        attempts=1,
        result_path=f"results/bench__cfg{index // 5:05d}__c{index % 5 + 1:02d}/result.json",
        started_at="2025-01-06T09:00:00+00:00",
        completed_at="2025-01-06T09:00:30+00:00",
    )


def timings_ms(action: Callable[[int], object], repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        action(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def describe(label: str, times: list[float]) -> str:
    return (
        f"{label:<18} median {statistics.median(times):7.2f} ms   "
        f"min {min(times):7.2f}   max {max(times):7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=15)
    parser.add_argument("--dir", type=Path, default=None, help="Where to put the manifest.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        path = Path(directory) / "manifest.json"
        entries = [entry(i) for i in range(args.entries)]
        manifest = Manifest(campaign_name="bench", host="localhost")
        manifest.entries.update((e.exp_id, e) for e in entries)
        save_manifest(path, manifest)
        size_kib = path.stat().st_size / 1024

        def update(i: int) -> object:
            slot = i % len(entries)  # `entries` follows the file: each update expects it
            current, entries[slot] = (
                entries[slot],
                replace(entries[slot], status="running"),
            )
            return replace_entry(path, "bench", "localhost", current, entries[slot])

        loads = timings_ms(lambda _: load_manifest(path), args.updates)
        loaded = load_manifest(path)
        saves = timings_ms(lambda _: save_manifest(path, loaded), args.updates)
        updates = timings_ms(update, args.updates)
    print(f"manifest: {args.entries} entries, {size_kib:.0f} KiB, {args.updates} runs each")
    print(describe("load", loads))
    print(describe("save (atomic)", saves))
    print(describe("replace_entry", updates))


if __name__ == "__main__":
    main()
