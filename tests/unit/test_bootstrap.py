"""bootstrap_ci: agreement with scipy, edge cases, and the vectorized many-groups path.

Coverage by simulation is in test_intervals.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from llenergymeasure.stats import BootstrapCI, bootstrap_ci, bootstrap_ci_many

FIXED_DATA = {
    "energy_j_5_cycles": [41.2, 40.8, 42.0, 41.5, 40.9],
    "outlier": [1.0, 2.0, 3.0, 4.0, 100.0],
    "lognormal_12": [0.31, 2.2, 0.74, 1.05, 0.48, 3.9, 0.92, 1.61, 0.27, 1.33, 0.66, 2.8],
}


@pytest.mark.parametrize("name", sorted(FIXED_DATA))
@pytest.mark.parametrize("confidence", [0.90, 0.95])
def test_bounds_agree_with_scipy_percentile_bootstrap(name: str, confidence: float) -> None:
    data = np.array(FIXED_DATA[name])
    ours = bootstrap_ci(data, confidence=confidence, method="percentile")
    reference = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=confidence,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert ours.ci_lower is not None and ours.ci_upper is not None
    # Two independent 10,000-resample estimates differ by Monte-Carlo noise only:
    # allow 5 % of the interval width (a wrong quantile would be off by far more).
    tolerance = 0.05 * (ours.ci_upper - ours.ci_lower)
    assert ours.ci_lower == pytest.approx(reference.low, abs=tolerance)
    assert ours.ci_upper == pytest.approx(reference.high, abs=tolerance)


def test_mean_and_std_are_the_sample_statistics() -> None:
    data = FIXED_DATA["lognormal_12"]
    ci = bootstrap_ci(data)
    assert ci.mean == pytest.approx(np.mean(data), rel=1e-12)
    assert ci.std == pytest.approx(np.std(data, ddof=1), rel=1e-12)
    assert ci.ci_lower is not None and ci.ci_upper is not None
    assert ci.ci_lower < ci.mean < ci.ci_upper
    assert (ci.n, ci.n_dropped, ci.confidence, ci.n_resamples) == (12, 0, 0.95, 10_000)
    assert ci.method == "bootstrap-t"
    assert ci.warning is None


def test_higher_confidence_gives_a_wider_interval() -> None:
    data = FIXED_DATA["lognormal_12"]
    narrow, wide = bootstrap_ci(data, confidence=0.8), bootstrap_ci(data, confidence=0.99)
    assert wide.ci_lower < narrow.ci_lower < narrow.ci_upper < wide.ci_upper  # type: ignore[operator]


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    data = FIXED_DATA["lognormal_12"]
    assert bootstrap_ci(data, seed=1) == bootstrap_ci(data, seed=1)
    assert bootstrap_ci(data, seed=1).ci_lower != bootstrap_ci(data, seed=2).ci_lower


def test_equal_samples_give_an_exact_zero_width_interval() -> None:
    ci = bootstrap_ci([0.05, 0.05, 0.05])
    assert (ci.mean, ci.std, ci.ci_lower, ci.ci_upper) == (0.05, 0.0, 0.05, 0.05)
    for method in ("student-t", "bootstrap-t", "percentile"):
        ci = bootstrap_ci([0.05] * 6, method=method)  # type: ignore[arg-type]
        assert (ci.mean, ci.ci_lower, ci.ci_upper) == (0.05, 0.05, 0.05), method


def test_null_and_nan_samples_are_dropped_and_counted() -> None:
    with_nulls = bootstrap_ci([41.2, None, 40.8, math.nan, 42.0, math.inf])
    clean = bootstrap_ci([41.2, 40.8, 42.0])
    assert (with_nulls.n, with_nulls.n_dropped) == (3, 3)
    assert (with_nulls.mean, with_nulls.ci_lower, with_nulls.ci_upper) == (
        clean.mean,
        clean.ci_lower,
        clean.ci_upper,
    )
    assert (
        with_nulls.warning
        == "3 samples: fewer than 5, student-t interval, wide; 3 null sample(s) left out"
    )


def test_no_samples_means_no_mean() -> None:
    ci = bootstrap_ci([None, None])
    assert (ci.mean, ci.std, ci.ci_lower, ci.ci_upper, ci.n, ci.n_dropped) == (
        None,
        None,
        None,
        None,
        0,
        2,
    )
    assert ci.warning is not None and ci.warning.startswith("no samples")


def test_one_sample_has_a_mean_but_no_interval() -> None:
    ci = bootstrap_ci([7.5])
    assert (ci.mean, ci.std, ci.ci_lower, ci.ci_upper) == (7.5, None, None, None)
    assert ci.warning == "1 sample: no confidence interval"


def test_fewer_than_five_samples_use_student_t_and_warn() -> None:
    ci = bootstrap_ci([1.0, 2.0])
    # mean 1.5, sd 0.7071, SE 0.5, t_{0.975, 1} = 12.706
    assert (ci.ci_lower, ci.ci_upper) == pytest.approx((1.5 - 6.353102, 1.5 + 6.353102))
    assert (ci.method, ci.n_resamples) == ("student-t", 0)
    assert ci.warning == "2 samples: fewer than 5, student-t interval, wide"
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0]).warning is not None
    five = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (five.warning, five.method) == (None, "bootstrap-t")


@pytest.mark.parametrize("name", sorted(FIXED_DATA))
@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_student_t_agrees_with_scipy(name: str, confidence: float) -> None:
    data = np.array(FIXED_DATA[name])
    ours = bootstrap_ci(data, confidence=confidence, method="student-t")
    low, high = stats.t.interval(confidence, len(data) - 1, loc=data.mean(), scale=stats.sem(data))
    assert (ours.ci_lower, ours.ci_upper) == pytest.approx((low, high), rel=1e-9)


def test_bootstrap_t_is_wider_on_the_long_tail_side() -> None:
    # Right-skewed data: the studentized bootstrap stretches the upper side, unlike
    # the symmetric t interval; both hold the mean.
    data = FIXED_DATA["lognormal_12"]
    boot, student = bootstrap_ci(data), bootstrap_ci(data, method="student-t")
    assert boot.method == "bootstrap-t"
    assert boot.ci_upper - boot.mean > boot.mean - boot.ci_lower  # type: ignore[operator]
    assert boot.ci_upper > student.ci_upper  # type: ignore[operator]


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        bootstrap_ci([1.0, 2.0, 3.0], method="bca")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("confidence", "n_resamples"), [(0.0, 100), (1.0, 100), (1.5, 100), (0.95, 0)]
)
def test_invalid_parameters_are_rejected(confidence: float, n_resamples: int) -> None:
    with pytest.raises(ValueError, match=r"confidence|n_resamples"):
        bootstrap_ci([1.0, 2.0, 3.0], confidence=confidence, n_resamples=n_resamples)


def test_many_groups_equal_one_call_per_group() -> None:
    groups: list[list[float | None]] = [
        [41.2, 40.8, 42.0],
        [1.0, None, 3.0, 2.0],
        [None],
        [5.0],
        [2.0, 2.5, 2.25],
        [10.0, 11.0, 9.5, 10.5, 10.25, 9.75],
    ]
    many = bootstrap_ci_many(groups, n_resamples=2_000, seed=3)
    single = [bootstrap_ci(group, n_resamples=2_000, seed=3) for group in groups]
    assert len(many) == len(groups)
    for from_many, alone in zip(many, single, strict=True):
        assert isinstance(from_many, BootstrapCI)
        assert from_many == alone


def test_tied_samples_do_not_stretch_the_bootstrap_t_interval_without_bound() -> None:
    # 4 of 5 values tied: a third of the resamples hold only the ties (SE* = 0); with no
    # floor on SE* their t* is unbounded and so would be the interval.
    data = [10.0, 10.0, 10.0, 10.0, 11.0]
    boot = bootstrap_ci(data)
    student = bootstrap_ci(data, method="student-t")
    half = student.ci_upper - student.mean  # type: ignore[operator]
    assert boot.method == "bootstrap-t"
    assert boot.ci_lower <= boot.mean <= boot.ci_upper  # type: ignore[operator]
    assert boot.ci_upper - boot.mean < 4 * half  # type: ignore[operator]
    assert boot.mean - boot.ci_lower < 4 * half  # type: ignore[operator]
