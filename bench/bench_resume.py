"""Re-running a completed campaign: what finished work costs on the next run.

Runs a campaign of 200 experiments (the tiny model, windows of zero length) to the end
with the campaign playbook on localhost, then runs the same command again: the
re-run reads the host's manifest once and has nothing left to run. Prints both wall
times, the re-run's task count and its PLAY RECAP; asserts nothing.

    .venv/bin/python bench/bench_resume.py [--experiments 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlib import DEFAULT_CACHE_DIR, Playbook, cpu_image, tiny_campaign

CAMPAIGN = "benchresume"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200, help="Even: 2 configs.")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args()
    image = cpu_image()
    campaign = tiny_campaign(CAMPAIGN, args.experiments // 2, window_seconds=0.0)
    with tempfile.TemporaryDirectory(prefix="lem-bench-resume-") as work:
        playbook = Playbook(Path(work), args.cache_dir)
        host = playbook.host("resume")
        _, first_wall = playbook.run(host, campaign)
        rerun, rerun_wall = playbook.run(host, campaign)
        completed = len(playbook.results(host, CAMPAIGN))
    tasks = sum(1 for line in rerun.output.splitlines() if line.startswith("TASK ["))
    print(f"resume: {completed} experiments completed, image {image}, localhost")
    print(f"first run (all experiments)   {first_wall:8.1f} s")
    print(f"re-run (nothing left to run)  {rerun_wall:8.1f} s, {tasks} tasks")
    print(f"re-run PLAY RECAP: {rerun.recap()}")


if __name__ == "__main__":
    main()
