"""The exact bootstrap (every distinct resample, weighted) against brute force and sampling.

Brute force here walks all n^n ordered resamples with equal weight, independently of
the multiset enumeration in stats/bootstrap.py. The exact interval must equal the
brute-force quantiles; a sampled interval must land within its sampling error of them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from llenergymeasure.stats import bootstrap_ci_many
from llenergymeasure.stats.bootstrap import EXACT_MAX_N, MIN_SE_FRACTION

GROUPS = 60
SAMPLED = 10_000
ALPHA = 0.025


def all_resamples(sample: np.ndarray) -> np.ndarray:
    """(n^n, n): every ordered resample of `sample`, each equally likely."""
    n = sample.size
    return sample[np.array(list(itertools.product(range(n), repeat=n)))]


def resample_statistics(sample: np.ndarray, method: str) -> np.ndarray:
    """mean* - mean (percentile) or t* with the floored SE* (bootstrap-t), per resample."""
    n = sample.size
    resamples = all_resamples(sample)
    shift = resamples.mean(axis=1) - sample.mean()
    if method == "percentile":
        return shift
    se = sample.std(ddof=1) / math.sqrt(n)
    se_star = resamples.std(axis=1, ddof=1) / math.sqrt(n)
    return shift / np.maximum(se_star, MIN_SE_FRACTION * se)


def inverse_cdf(values: np.ndarray, p: float) -> float:
    ordered = np.sort(values)
    return float(ordered[math.ceil(p * ordered.size - 1e-9) - 1])


def bound_statistics(sample: np.ndarray, lower: float, upper: float, method: str) -> tuple:
    """The (low, high) resample-statistic quantiles an interval was built from."""
    mean = sample.mean()
    if method == "percentile":
        return lower - mean, upper - mean
    se = sample.std(ddof=1) / math.sqrt(sample.size)
    return (mean - upper) / se, (mean - lower) / se


def samples(n: int) -> np.ndarray:
    return np.random.default_rng(n).lognormal(0.0, 0.25, (GROUPS, n))


@pytest.mark.parametrize("method", ["bootstrap-t", "percentile"])
@pytest.mark.parametrize("n", [5, 6])
def test_exact_interval_is_the_brute_force_bootstrap_distribution(method: str, n: int) -> None:
    data = samples(n)
    cis = bootstrap_ci_many(data, method=method)  # type: ignore[arg-type]
    for sample, ci in zip(data, cis, strict=True):
        assert ci.exact and ci.n_resamples == math.comb(2 * n - 1, n)
        statistics = resample_statistics(sample, method)
        low, high = bound_statistics(sample, ci.ci_lower, ci.ci_upper, method)  # type: ignore[arg-type]
        assert low == pytest.approx(inverse_cdf(statistics, ALPHA), abs=1e-9)
        assert high == pytest.approx(inverse_cdf(statistics, 1 - ALPHA), abs=1e-9)


@pytest.mark.parametrize("method", ["bootstrap-t", "percentile"])
def test_sampled_interval_agrees_with_the_exact_one_within_sampling_error(method: str) -> None:
    # A sampled p-quantile sits at a rank of the exact distribution within about
    # sqrt(p(1-p)/R) of p; 4 of those is the band (both bounds, every group).
    n = 5
    data = samples(n)
    sampled = bootstrap_ci_many(data, n_resamples=SAMPLED, method=method, exact_max_n=0)  # type: ignore[arg-type]
    exact = bootstrap_ci_many(data, method=method)  # type: ignore[arg-type]
    band = 4 * math.sqrt(ALPHA * (1 - ALPHA) / SAMPLED)
    for sample, ci, reference in zip(data, sampled, exact, strict=True):
        assert not ci.exact and ci.n_resamples == SAMPLED
        statistics = resample_statistics(sample, method)
        for p, value in zip(
            (ALPHA, 1 - ALPHA),
            bound_statistics(sample, ci.ci_lower, ci.ci_upper, method),
            strict=True,
        ):  # type: ignore[arg-type]
            assert np.mean(statistics < value - 1e-12) <= p + band
            assert np.mean(statistics <= value + 1e-12) >= p - band
        # and the two intervals are close in absolute terms (atoms are dense at n = 5)
        width = reference.ci_upper - reference.ci_lower  # type: ignore[operator]
        assert abs(ci.ci_lower - reference.ci_lower) < 0.1 * width  # type: ignore[operator]
        assert abs(ci.ci_upper - reference.ci_upper) < 0.1 * width  # type: ignore[operator]


def test_exact_resampling_stops_above_eight_samples() -> None:
    small, large = bootstrap_ci_many([np.arange(8.0), np.arange(9.0)], n_resamples=500)
    assert small.exact and small.n_resamples == 6435
    assert not large.exact and large.n_resamples == 500
    with pytest.raises(ValueError, match="exact_max_n"):
        bootstrap_ci_many([np.arange(5.0)], exact_max_n=EXACT_MAX_N + 1)
