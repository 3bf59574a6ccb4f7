"""Campaign efficiency: the share of a campaign's wall time spent inside measurement windows.

Runs a campaign of the tiny model with the campaign playbook on localhost (CPU image,
no gaps configured; 4 configs sharing a load key, interleaved over 3 cycles, so that
the health check between cycles is shared by 4 experiments as in a real campaign's
grid) and prints the sum of the windows (`timing.window_seconds`) over:

  - the experiment loop: from the first experiment marked running to the last one
    completed, as the manifest records them;
  - the whole playbook run: planning, host and service set-up, teardown, summary.

Configured gaps are excluded from both (none are configured here; the waits the
results record are subtracted all the same). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_efficiency.py [--window 10] [--configs 4] [--cycles 3]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path

from benchlib import DEFAULT_CACHE_DIR, Playbook, cpu_image, tiny_campaign

from llenergymeasure.host.manifest import load_manifest

CAMPAIGN = "benchefficiency"


def loop_seconds(manifest: Path) -> float:
    """From the first experiment marked running to the last one completed."""
    entries = load_manifest(manifest).entries.values()
    first = min(datetime.fromisoformat(e.started_at) for e in entries if e.started_at)
    last = max(datetime.fromisoformat(e.completed_at) for e in entries if e.completed_at)
    return (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="Minimum window, seconds.")
    parser.add_argument("--configs", type=int, default=4, help="Configs (batch sizes 1..N).")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args()
    image = cpu_image()
    with tempfile.TemporaryDirectory(prefix="lem-bench-eff-") as work:
        playbook = Playbook(Path(work), args.cache_dir)
        host = playbook.host("efficiency")
        batch_sizes = tuple(range(1, args.configs + 1))
        campaign = tiny_campaign(CAMPAIGN, args.cycles, args.window, batch_sizes)
        _, wall = playbook.run(host, campaign)
        results = playbook.results(host, CAMPAIGN)
        loop = loop_seconds(host.manifest(CAMPAIGN))
    timings = [result["timing"] for result in results]
    windows = sum(t["window_seconds"] for t in timings)
    gaps = sum(t["gap_waited_seconds"] or 0.0 for t in timings)
    warmups = sum(t["warmup_seconds"] for t in timings)
    loads = sum(t["load_seconds"] for t in timings)
    count = len(results)
    print(
        f"campaign efficiency: {args.configs} configs x {args.cycles} cycles = {count} "
        f"experiments, windows >= {args.window:g} s, no gaps,"
    )
    print(f"image {image}, tiny model, localhost")
    print(f"windows {windows:.1f} s, warmups {warmups:.1f} s, model loads {loads:.1f} s")
    print(
        f"experiment loop {loop:.0f} s: {100 * windows / (loop - gaps):.1f} % in windows "
        f"({(loop - gaps - windows) / count:.2f} s per experiment outside them)"
    )
    print(
        f"whole playbook run {wall:.1f} s (set-up and teardown included): "
        f"{100 * windows / (wall - gaps):.1f} % in windows"
    )


if __name__ == "__main__":
    main()
