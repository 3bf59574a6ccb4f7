"""Bootstrap CIs for 1,000 groups of 5 cycles: vectorized vs a per-resample Python loop.

Both paths use the same seed, so they draw the same resamples and must give the
same intervals; the script checks that, then prints both times and their ratio,
measured in this one run. The loop is slow (10,000 resamples x 1,000 groups), so
by default it runs on the first --loop-groups groups and the ratio compares the
time per group; pass --loop-groups 1000 to time the loop on every group.

    .venv/bin/python bench/bench_bootstrap.py [--groups 1000] [--loop-groups 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llenergymeasure.stats import bootstrap_ci_many

CONFIDENCE, RESAMPLES, SEED = 0.95, 10_000, 42


def loop_bounds(samples: np.ndarray) -> tuple[float, float]:
    """The reference: one Python iteration per resample, same RNG stream as the vectorized path."""
    rng = np.random.default_rng(SEED)
    n = samples.size
    means = np.empty(RESAMPLES)
    for r in range(RESAMPLES):
        means[r] = samples[rng.integers(0, n, n)].mean()
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--loop-groups", type=int, default=100)
    args = parser.parse_args()
    # Energy per experiment in joules: a few hundred J with a few % cycle-to-cycle spread.
    data = np.random.default_rng(0).normal(400.0, 12.0, size=(args.groups, args.cycles))
    loop_groups = min(args.loop_groups, args.groups)

    start = time.perf_counter()
    vectorized = bootstrap_ci_many(data.tolist(), CONFIDENCE, RESAMPLES, SEED)
    vectorized_s = time.perf_counter() - start

    start = time.perf_counter()
    looped = [loop_bounds(row) for row in data[:loop_groups]]
    loop_s = time.perf_counter() - start

    worst = max(
        abs(ci.ci_lower - low) + abs(ci.ci_upper - high)  # type: ignore[operator]
        for ci, (low, high) in zip(vectorized, looped, strict=False)
    )
    per_group_vectorized = vectorized_s / args.groups
    per_group_loop = loop_s / loop_groups
    print(f"groups {args.groups} x cycles {args.cycles}, {RESAMPLES} resamples, seed {SEED}")
    print(
        f"vectorized: {vectorized_s:.3f} s for {args.groups} groups "
        f"({per_group_vectorized * 1e3:.3f} ms/group)"
    )
    print(
        f"loop:       {loop_s:.3f} s for {loop_groups} groups ({per_group_loop * 1e3:.3f} ms/group)"
    )
    print(f"same intervals on the {loop_groups} looped groups: max |difference| {worst:.2e} J")
    print(f"ratio (loop / vectorized, per group): {per_group_loop / per_group_vectorized:.0f}x")


if __name__ == "__main__":
    main()
