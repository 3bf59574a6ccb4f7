"""`lem aggregate` over 10,000 results (2,000 configs x 5 cycles): before and after, one run.

After (the package as it is): up to 8 cycles the bootstrap enumerates every distinct
resample with its multinomial weight (126 at 5 cycles) and the table is joined as
plain text. Before (reproduced here by patching, as the code was): 10,000 sampled
resamples per group and the table rendered by rich. Both run the real CLI in a fresh
process on the same result files; then each step is timed in this process, and the
two summaries' intervals are compared. Prints both figures and their ratio; asserts
nothing.

    .venv/bin/python bench/bench_aggregate.py [--configs 2000] [--cycles 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llenergymeasure.results import aggregate, compare
from llenergymeasure.results.texttable import TextTable
from llenergymeasure.stats import bootstrap


def rich_plain(*parts: TextTable | str) -> str:
    """The table as rich rendered it before (box.SIMPLE, a 200-column log console)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    text = io.StringIO()
    console = Console(file=text, width=200, color_system=None, force_terminal=False)
    for part in parts:
        if isinstance(part, str):
            console.print(part, markup=False, highlight=False)
            continue
        table = Table(box=box.SIMPLE, title=part.title, title_justify="left")
        table.caption, table.caption_justify = part.caption, "left"
        for header, right in zip(part.headers, part.right_aligned, strict=True):
            table.add_column(header, justify="right" if right else "left")
        for row in part.rows:
            if row is None:
                table.add_section()
            else:
                table.add_row(*row)
        console.print(table)
    return "".join(line.rstrip() + "\n" for line in text.getvalue().splitlines())


@contextmanager
def as_before() -> Iterator[None]:
    """Sampled resamples at every n and rich's renderer, as before the change."""
    saved = aggregate.bootstrap_ci_many, compare.ratio_ci_many, aggregate._plain
    aggregate.bootstrap_ci_many = functools.partial(bootstrap.bootstrap_ci_many, exact_max_n=0)  # type: ignore[assignment]
    compare.ratio_ci_many = functools.partial(bootstrap.ratio_ci_many, exact_max_n=0)  # type: ignore[assignment]
    aggregate._plain = rich_plain  # type: ignore[assignment]
    try:
        yield
    finally:
        aggregate.bootstrap_ci_many, compare.ratio_ci_many, aggregate._plain = saved


def cli_seconds(results: Path, out: Path, before: bool) -> tuple[float, float]:
    """Wall and CPU (user + system) time of `lem aggregate RESULTS --out OUT`, fresh process.

    CPU time is about what the wall time would be on an idle machine (one thread, but
    for numpy's); on a shared machine the wall time also counts the waits.
    """
    runner = [str(Path(__file__)), "--run-cli-before"] if before else ["-m", "llenergymeasure.cli"]
    command = [sys.executable, *runner, "aggregate", str(results), "--out", str(out)]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def steps(results: Path) -> dict[str, float]:
    """In-process time of each step of `lem aggregate`."""
    loaded, load_s = timed(lambda: aggregate.load_result_files(results))
    summary, aggregate_s = timed(
        lambda: aggregate.aggregate_results(loaded.results, sources=loaded.sources)
    )
    _, render_s = timed(lambda: aggregate.render_table(summary))
    return {"read + validate": load_s, "bootstrap CIs": aggregate_s, "render table": render_s}


def widest_gap(before: Path, after: Path) -> float:
    """Largest |bound difference| between the two summaries, relative to the interval width."""
    rows = [json.loads((folder / "summary.json").read_text())["rows"] for folder in (before, after)]
    worst = 0.0
    for old, new in zip(*rows, strict=True):
        for metric, ci in new["metrics"].items():
            previous = old["metrics"][metric]
            if ci["ci_lower"] is None or ci["ci_upper"] == ci["ci_lower"]:
                continue
            width = ci["ci_upper"] - ci["ci_lower"]
            for bound in ("ci_lower", "ci_upper"):
                worst = max(worst, abs(ci[bound] - previous[bound]) / width)
    return worst


def line(label: str, before: float, after: float) -> None:
    print(f"{label:<24} {before:>9.3f} s {after:>9.3f} s {before / after:>8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="CLI runs per side (median)")
    args = parser.parse_args()
    # Imported here: the 'before' CLI process imports only what `lem aggregate` imports.
    from bench_controller import write_results
    from bench_plan import HOSTS, campaign_file

    from llenergymeasure.config.loader import load_campaign
    from llenergymeasure.controller.plan import build_plan

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        plan = build_plan(load_campaign(campaign_file(directory, args.configs, args.cycles)), HOSTS)
        results = directory / "results"
        write_results(results, plan)
        outs = {side: directory / side for side in ("before", "after")}
        cli: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        for _ in range(args.repeats):  # alternate, so both sides see the same machine load
            for side, out in outs.items():
                cli[side].append(cli_seconds(results, out, before=side == "before"))
        with as_before():
            before_steps = steps(results)
        after_steps = steps(results)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(
            f"lem aggregate: {len(plan.experiments)} results, {args.configs} configs x "
            f"{args.cycles} cycles, {len(aggregate.HEADLINE_METRICS)} metrics"
        )
        print(f"{'':<24} {'before':>11} {'after':>11} {'ratio':>9}")
        for index, label in enumerate(("CLI, wall (median)", "CLI, CPU (median)")):
            before, after = (statistics.median(t[index] for t in cli[side]) for side in outs)
            line(label, before, after)
        for step, seconds in before_steps.items():
            line(f"  {step}", seconds, after_steps[step])
        gap = widest_gap(outs["before"], outs["after"])
        print(f"intervals: largest |before - after| bound = {gap:.1%} of the interval's width")


def run_cli_before() -> None:
    """`lem aggregate` with the code as it was (for the 'before' subprocess)."""
    from llenergymeasure.cli import main as cli_main

    sys.argv = ["lem", *sys.argv[2:]]
    with as_before():
        cli_main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run-cli-before"]:
        run_cli_before()
    else:
        main()
