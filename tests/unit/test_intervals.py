"""The default interval keeps its promise: coverage by simulation, t quantiles, paired ratios.

Each case draws 2,000 seeded samples and computes all their intervals in one vectorized
call. The numbers behind the thresholds are in docs/statistics.md.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from llenergymeasure.stats import bootstrap_ci_many, ratio_ci_many, t_quantile

REPLICATES = 2_000
RESAMPLES = 2_000
SIZES = (3, 5, 10)
# (name, true mean, sampler): normal, and right-skewed lognormal (sigma 0.25: CV 25 %,
# skewness 0.8, more skewed than cycle-to-cycle energy readings).
SIGMA = 0.25
DISTRIBUTIONS = {
    "normal": (10.0, lambda rng, shape: rng.normal(10.0, 2.0, shape)),
    "lognormal": (float(np.exp(SIGMA**2 / 2)), lambda rng, shape: rng.lognormal(0, SIGMA, shape)),
}


def coverage(method: str, distribution: str, n: int, seed: int = 2024) -> float:
    truth, sampler = DISTRIBUTIONS[distribution]
    samples = sampler(np.random.default_rng(seed), (REPLICATES, n))
    cis = bootstrap_ci_many(samples, n_resamples=RESAMPLES, method=method)  # type: ignore[arg-type]
    lower = np.array([ci.ci_lower for ci in cis])
    upper = np.array([ci.ci_upper for ci in cis])
    return float(np.mean((lower <= truth) & (truth <= upper)))


@pytest.mark.parametrize(("distribution", "n"), list(itertools.product(DISTRIBUTIONS, SIZES)))
def test_default_95_percent_interval_covers_at_least_93_percent(distribution: str, n: int) -> None:
    assert coverage("auto", distribution, n) >= 0.93


@pytest.mark.parametrize("n", SIZES)
def test_default_interval_is_not_needlessly_wide(n: int) -> None:
    # On normal data it should cover about 95 %, not 99 %: an interval that is far too
    # wide would pass the test above and still mislead.
    assert coverage("auto", "normal", n) <= 0.97


@pytest.mark.parametrize(("n", "at_most"), [(3, 0.80), (5, 0.88)])
def test_percentile_bootstrap_undercovers_at_small_n(n: int, at_most: float) -> None:
    # The simulation can tell a bad interval from a good one: the percentile bootstrap
    # lies within [min, max] of the sample, which holds the mean with 1 - 2^(1-n).
    assert coverage("percentile", "normal", n) <= at_most


def test_paired_ratio_interval_covers_at_least_93_percent() -> None:
    # Cycle k of both configs shares a condition effect (e.g. temperature); B = 1.2 A.
    rng = np.random.default_rng(7)
    for n in SIZES:
        shared = rng.normal(0.0, 10.0, (REPLICATES, n))
        baseline = 100.0 + shared + rng.normal(0.0, 2.0, (REPLICATES, n))
        other = 1.2 * (100.0 + shared) + rng.normal(0.0, 2.0, (REPLICATES, n))
        cis = ratio_ci_many(list(zip(other, baseline, strict=True)), n_resamples=RESAMPLES)
        lower = np.array([ci.ci_lower for ci in cis])
        upper = np.array([ci.ci_upper for ci in cis])
        assert np.mean((lower <= 1.2) & (upper >= 1.2)) >= 0.93, n


def test_pairing_narrows_the_ratio_interval() -> None:
    # Large shared cycle effects cancel in a paired ratio; shuffling the pairs breaks that.
    rng = np.random.default_rng(3)
    shared = rng.normal(0.0, 20.0, 8)
    baseline = 100.0 + shared + rng.normal(0.0, 1.0, 8)
    other = 110.0 + shared + rng.normal(0.0, 1.0, 8)
    paired, shuffled = ratio_ci_many([(other, baseline), (other, baseline[::-1])])
    assert paired.mean == pytest.approx(other.mean() / baseline.mean(), rel=1e-12)
    assert paired.ci_lower > 1.0  # type: ignore[operator]
    width = paired.ci_upper - paired.ci_lower  # type: ignore[operator]
    assert width * 3 < shuffled.ci_upper - shuffled.ci_lower  # type: ignore[operator]


def test_ratio_leaves_out_pairs_with_a_null() -> None:
    [ci] = ratio_ci_many([([2.0, None, 4.0, 6.0], [1.0, 1.0, None, 3.0])])
    assert (ci.n, ci.n_dropped) == (2, 2)
    assert ci.mean == pytest.approx(8.0 / 4.0)
    with pytest.raises(ValueError, match="paired with"):
        ratio_ci_many([([1.0, 2.0], [1.0])])


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 30, 101, 500])
@pytest.mark.parametrize("p", [0.0005, 0.025, 0.1, 0.5, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
