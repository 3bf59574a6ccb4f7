"""The results path at 2,000 experiments: bytes each module returns, the controller's peak memory.

Before (issue 17): lem_experiment returned the whole result.json (power samples
included), lem_manifest re-sent it for every completed experiment, and the lem_campaign
callback held every return and validated it into an ExperimentResult to summarise.
After: the modules return a compact record (identity, status, headline metrics, the
result file's path), the result files reach results/<campaign>/hosts/ as files, and the
callback summarises that tree with `summarize_tree`, as `lem aggregate` does.

Both are measured in this one run on the same synthetic results (tests/fixtures/results.py,
with a power trace of --window-s seconds at 100 ms): the JSON bytes of one return, and the
peak Python memory (tracemalloc) of summarising 2,000 experiments each way. Prints the
figures and their ratios; asserts nothing.

    .venv/bin/python bench/bench_results_path.py [--experiments 2000] [--window-s 60]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.dispatch.attempt import completed_fields
from llenergymeasure.host.manifest import ManifestEntry
from llenergymeasure.results.aggregate import aggregate_results, summarize_tree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.results import make_result, write_result  # noqa: E402

CONFIGS = 400  # x 5 cycles = 2,000 experiments by default


def results(count: int, window_s: float) -> list[ExperimentResult]:
    return [
        make_result(
            f"cfg{i % CONFIGS:03d}",
            i // CONFIGS + 1,
            energy_j=300.0 + i % 97,
            window_s=window_s,
            with_power_trace=True,
        )
        for i in range(count)
    ]


def returned(result: ExperimentResult, with_result: bool) -> dict[str, Any]:
    """What lem_experiment returns for a completed experiment (before: with the result)."""
    identity = result.identity
    entry = ManifestEntry(
        exp_id=identity.exp_id,
        config_name=identity.config_name,
        config_hash=identity.config_hash,
        backend="pytorch",
        service="pytorch",
        cycle=identity.cycle,
        status="completed",
        attempts=1,
        result_path=f"results/{identity.exp_id}/result.json",
    )
    record = {
        "changed": True,
        "exp_id": identity.exp_id,
        "config_name": identity.config_name,
        "cycle": identity.cycle,
        "host": identity.host,
        "reason": "new",
        "detail": "not run yet",
        "service_restarts": 0,
        "health": [],
        "gap": {"mode": "fixed", "outcome": "none", "waited_seconds": 0.0},
        **completed_fields(entry, result),
    }
    if with_result:
        record["result"] = result.model_dump(mode="json")
    return record


def peak_mib(work: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    work()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def summarise_returns(wire: list[bytes]) -> None:
    """Before: every return held (as Ansible hands it over), each result validated."""
    held = [json.loads(raw) for raw in wire]
    validated = [ExperimentResult.model_validate(r["result"]) for r in held]
    aggregate_results(validated, n_resamples=1000)


def summarise_tree(root: Path) -> None:
    """After: compact returns held for the progress lines; the tree summarised."""
    summarize_tree(root, n_resamples=1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--window-s", type=float, default=60.0)
    args = parser.parse_args()
    made = results(args.experiments, args.window_s)
    before = [json.dumps(returned(r, True)).encode() for r in made]
    after = [json.dumps(returned(r, False)).encode() for r in made]
    per_before, per_after = len(before[0]), len(after[0])
    print(f"bytes returned per experiment ({args.window_s:g} s power trace at 100 ms):")
    ratio = per_before / per_after
    print(f"  before {per_before:>9,d}   after {per_after:>6,d}   ratio {ratio:.0f}x")
    print(
        f"  lem_manifest on a re-run, {args.experiments} completed: before "
        f"{sum(map(len, before)):,d} B, after {sum(map(len, after)):,d} B"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hosts" / "localhost"
        for result in made:
            write_result(root, result)
        del made
        peak_before = peak_mib(lambda: summarise_returns(before))
        peak_after = peak_mib(lambda: (list(after), summarise_tree(Path(tmp))))
    print(f"controller peak memory summarising {args.experiments} experiments (tracemalloc):")
    print(
        f"  before {peak_before:8.1f} MiB   after {peak_after:8.1f} MiB   "
        f"ratio {peak_before / peak_after:.1f}x"
    )


if __name__ == "__main__":
    main()
