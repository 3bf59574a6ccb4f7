"""Load: memory and per-experiment overhead stay flat as a campaign grows.

Two parts, figures and ratios only (no assertions):

1. A campaign of --experiments short experiments (default 500: the tiny model, a 0.1 s
   window, no gaps) run by the campaign playbook on localhost. A sampler reads, every
   --sample-seconds, the resident memory of the ansible-playbook main process and of each
   lem_experiment module process. Per experiment: the orchestration overhead (from the
   previous experiment's end to this one's start, as the results time them, model load
   excluded), the controller's RSS and the module's RSS over its span. The first 50 and
   the last 50 experiments are compared: a ratio near 1 means flat.
2. Manifests of --manifest-sizes entries (default 1,000 and 10,000), all completed but
   the last --left with a result file each: the lem_manifest module run as a process over
   the share (wall time, peak RSS: what a resume pays per host), and one manifest update
   (replace_entry, what each experiment pays twice). Ratios between the sizes.

    .venv/bin/python bench/bench_load.py                       # 500 experiments: ~30 min
    .venv/bin/python bench/bench_load.py --experiments 60      # a quick look
    .venv/bin/python bench/bench_load.py --experiments 0       # manifests only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_plan import campaign_file
from benchlib import DEFAULT_CACHE_DIR, REPO, Playbook, cpu_image, describe, tiny_config

# benchlib (imported first) puts tests/ on sys.path: the fixtures run the real playbook.
from fixtures.campaign import compose_down
from fixtures.faults import ControllerRun
from fixtures.results import make_result, write_result

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.controller.plan import Plan, build_plan
from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    replace_entry,
    save_manifest,
)

CAMPAIGN = "benchload"
WINDOW_SECONDS = 0.1
EDGE = 50  # experiments compared at each end of the campaign
MANIFEST_MODULE = REPO / "library" / "lem_manifest.py"
MIB = 1024 * 1024


# -- part 1: a long campaign -----------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` (VmRSS), or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(line.split()[1]) * 1024 if line else None


@dataclass
class Sample:
    at: float  # epoch seconds, comparable with the results' ISO timestamps
    controller: int | None
    modules: list[int] = field(default_factory=list)


def sample_until_done(run: ControllerRun, interval: float) -> list[Sample]:
    """RSS of the controller and of each running lem_experiment module, until the run ends."""
    samples: list[Sample] = []
    while run.process.poll() is None:
        modules = [
            rss
            for pid, cmd in run.processes().items()
            if cmd.split()[1:2] and cmd.split()[1].endswith("AnsiballZ_lem_experiment.py")
            if (rss := rss_bytes(pid)) is not None
        ]
        samples.append(Sample(time.time(), rss_bytes(run.pid), modules))
        time.sleep(interval)
    return samples


@dataclass(frozen=True)
class ExperimentLoad:
    overhead_s: float
    controller_mib: float | None
    module_mib: float | None


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def per_experiment(results: list[dict[str, Any]], samples: list[Sample]) -> list[ExperimentLoad]:
    """Overhead and memory of each experiment after the first, over its span of samples:
    from the previous experiment's end to its own end."""
    loads = []
    for previous, current in itertools.pairwise(result["timing"] for result in results):
        start, end = epoch(previous["finished_at"]), epoch(current["finished_at"])
        span = [s for s in samples if start <= s.at <= end]
        controllers = [s.controller for s in span if s.controller is not None]
        modules = [rss for s in span for rss in s.modules]
        gap = epoch(current["started_at"]) - start - (current.get("load_seconds") or 0.0)
        loads.append(
            ExperimentLoad(
                overhead_s=gap,
                controller_mib=max(controllers) / MIB if controllers else None,
                module_mib=max(modules) / MIB if modules else None,
            )
        )
    return loads


def long_campaign(experiments: int) -> dict[str, Any]:
    """experiments/2 configs sharing one load key (the model stays loaded) x 2 cycles."""
    configs = [tiny_config(f"c{i:04d}", 1, WINDOW_SECONDS) for i in range(experiments // 2)]
    return {
        "campaign_name": CAMPAIGN,
        "configs": configs,
        "max_configs": max(len(configs), 1),
        "execution": {"cycles": 2, "order": "interleaved"},
    }


def median_of(loads: list[ExperimentLoad], pick: Callable[[ExperimentLoad], Any]) -> float:
    values = [v for v in map(pick, loads) if v is not None]
    return statistics.median(values) if values else float("nan")


def report_edges(loads: list[ExperimentLoad]) -> None:
    first, last = loads[:EDGE], loads[-EDGE:]
    metrics: list[tuple[str, str, Callable[[ExperimentLoad], Any]]] = [
        ("overhead per experiment", "s", lambda load: load.overhead_s),
        ("controller RSS", "MiB", lambda load: load.controller_mib),
        ("lem_experiment module RSS", "MiB", lambda load: load.module_mib),
    ]
    print(
        f"{'median over':<28} {'first ' + str(len(first)):>12} {'last ' + str(len(last)):>12}"
        f" {'last/first':>11}"
    )
    for label, unit, pick in metrics:
        head, tail = median_of(first, pick), median_of(last, pick)
        print(f"{label + ' (' + unit + ')':<28} {head:12.3f} {tail:12.3f} {tail / head:11.2f}")


def run_long_campaign(experiments: int, cache_dir: Path, interval: float) -> None:
    cpu_image()
    work = Path(tempfile.mkdtemp(prefix="lem-bench-load-"))
    playbook = Playbook(work, cache_dir)
    host = playbook.host("load")
    campaign = work / "campaign.json"
    campaign.write_text(json.dumps(long_campaign(experiments)), encoding="utf-8")
    variables = {
        **host.variables(),
        "lem_campaign_file": str(campaign),
        "lem_results_dir": str(host.root / "results"),
    }
    started = time.perf_counter()
    with ControllerRun(playbook.inventory(), variables, work) as run:
        samples = sample_until_done(run, interval)
        outcome = run.finish()
    wall = time.perf_counter() - started
    if outcome.returncode != 0:  # the work directory stays, for the log and the state
        compose_down(host.project)
        sys.exit(f"the campaign playbook failed: see {run.log_path}")
    results = playbook.results(host, CAMPAIGN)
    shutil.rmtree(work)
    loads = per_experiment(results, samples)
    print(
        f"campaign: {len(results)} experiments in {wall:.0f} s "
        f"({len(results) / wall * 60:.1f} per minute), {len(samples)} memory samples"
    )
    print(describe("overhead per experiment", [load.overhead_s for load in loads]))
    report_edges(loads)


# -- part 2: large manifests -------------------------------------------------------------


def planned(directory: Path, size: int) -> Plan:
    """A plan of `size` experiments (size/5 configs x 5 cycles), all on localhost."""
    loaded = load_campaign(campaign_file(directory, size // 5, 5))
    return build_plan(loaded, ["localhost"])


def entry_of(experiment: Any, status: str) -> ManifestEntry:
    return ManifestEntry(
        exp_id=experiment.exp_id,
        config_name=experiment.config_name,
        config_hash=experiment.config_hash,
        backend=experiment.backend,
        service=experiment.backend,
        cycle=experiment.cycle,
        status=status,  # type: ignore[arg-type]
        attempts=1,
        result_path=f"results/{experiment.exp_id}/result.json",
        started_at="2025-01-06T09:00:00+00:00",
        completed_at="2025-01-06T09:00:30+00:00",
    )


def state_with_manifest(state: Path, plan: Plan, left: int) -> None:
    """The state dir of a campaign done but for its last `left` experiments."""
    done = plan.experiments[: len(plan.experiments) - left]
    manifest = Manifest(campaign_name=plan.campaign_name, host="localhost")
    for experiment in done:
        manifest.entries[experiment.exp_id] = entry_of(experiment, "completed")
        result = make_result(
            experiment.config_name,
            experiment.cycle,
            campaign_name=plan.campaign_name,
            config_hash=experiment.config_hash,
        )
        write_result(state / "results", result)
    save_manifest(state / "manifest.json", manifest)


def run_manifest_module(directory: Path, state: Path, plan: Plan) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of lem_manifest over the plan's share, as a process."""
    arguments = {
        "ANSIBLE_MODULE_ARGS": {
            "state_dir": str(state),
            "campaign_name": plan.campaign_name,
            "host": "localhost",
            "experiments": [e.model_dump(mode="json") for e in plan.experiments],
        }
    }
    args_file = directory / "args.json"
    args_file.write_text(json.dumps(arguments), encoding="utf-8")
    with (directory / "module-output.json").open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(MANIFEST_MODULE), str(args_file)], stdout=output
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"lem_manifest failed: see {directory / 'module-output.json'}")
    return wall, usage.ru_maxrss * 1024 / MIB


def update_ms(path: Path, plan: Plan, repeats: int) -> float:
    """Median ms of one compare-and-replace of an entry (start, then outcome)."""
    times = []
    for experiment in plan.experiments[-repeats:]:
        running = entry_of(experiment, "running")
        started = time.perf_counter()
        replace_entry(path, plan.campaign_name, "localhost", None, running)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def manifest_figures(size: int, left: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lem-bench-manifest-") as name:
        directory = Path(name)
        plan = planned(directory, size)
        state = directory / "state"
        state_with_manifest(state, plan, left)
        wall, rss = run_manifest_module(directory, state, plan)
        update = update_ms(state / "manifest.json", plan, min(left, 15))
    return {
        "lem_manifest wall (s)": wall,
        "lem_manifest peak RSS (MiB)": rss,
        "one entry update (ms)": update,
    }


def report_manifests(sizes: list[int], left: int) -> None:
    figures = {size: manifest_figures(size, left) for size in sizes}
    header = "".join(f"{size:>14,}" for size in sizes)
    print(f"{'manifest entries':<30}{header}{'ratio':>10}")
    for metric in figures[sizes[0]]:
        values = [figures[size][metric] for size in sizes]
        cells = "".join(f"{value:14.3f}" for value in values)
        print(f"{metric:<30}{cells}{values[-1] / values[0]:10.2f}")
    print(f"(entries ratio {sizes[-1] / sizes[0]:.0f}; {left} experiments left to run in each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=500, help="0 skips the campaign.")
    parser.add_argument("--manifest-sizes", default="1000,10000")
    parser.add_argument("--left", type=int, default=20, help="Experiments left in a manifest.")
    parser.add_argument("--sample-seconds", type=float, default=0.5)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args()
    if args.experiments:
        if args.experiments < 2 * EDGE + 2:
            print(f"note: fewer than {2 * EDGE + 2} experiments: the two ends overlap")
        run_long_campaign(args.experiments, args.cache_dir, args.sample_seconds)
    sizes = [int(size) for size in args.manifest_sizes.split(",") if size]
    if sizes:
        report_manifests(sizes, args.left)


if __name__ == "__main__":
    main()
