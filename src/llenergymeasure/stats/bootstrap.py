"""Confidence intervals of a mean, or of a ratio of paired means, vectorized with numpy.

One engine serves both: the mean of x is the ratio of paired means of (x, 1). For a
ratio R = mean(num) / mean(den) over paired observations (cycle k of two configs),
the standard error comes from the linearization d_k = num_k - R * den_k:
SE = sd(d) / (sqrt(n) * mean(den)), which for den = 1 is the usual sd / sqrt(n).

Methods (see docs/statistics.md for the coverage simulation that chose them):

- ``student-t``: R +- t_{n-1} * SE. Exact for normal data; used below 5 samples,
  where no resampling interval can reach its nominal coverage.
- ``bootstrap-t`` (studentized bootstrap): quantiles of t* = (R* - R) / SE* over
  resamples of whole pairs; corrects for skew; used from 5 samples.
- ``percentile``: quantiles of R*; kept by name only: it undercovers at small n.
- ``auto`` (default): student-t below 5 samples, bootstrap-t from 5.

Up to ``EXACT_MAX_N`` (8) samples the bootstrap distribution is computed exactly: a
resample is a multiset of the n samples, there are only C(2n-1, n) of them (126 at n = 5,
6,435 at n = 8), and each has its multinomial probability n! / (prod c_i! * n^n). Its
quantiles are the weighted quantiles over those resamples, with no sampling error and
far fewer resamples than 10,000. Above that, resampling draws one index matrix
``rng.integers(0, n, (n_resamples, n))`` per sample size, as counts. Either way the
resample statistics of many groups of one size are matrix products, with no Python loop
over resamples, and every group of a given size sees the same resamples as a single
call with the same seed, so ``bootstrap_ci_many(groups)[i] == bootstrap_ci(groups[i])``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict

from llenergymeasure.stats.tdist import t_quantile

Sample = float | int | None
Method = Literal["auto", "student-t", "bootstrap-t", "percentile"]
METHODS: tuple[str, ...] = get_args(Method)
# Below this many samples `auto` uses Student-t: a resample of 4 or fewer values is all
# one value too often (4/256 at n = 4) for a studentized bootstrap.
MIN_BOOTSTRAP_N = 5
# Up to this many samples the bootstrap enumerates every distinct resample (6,435 at 8).
EXACT_MAX_N = 8
# Resample statistics are computed for this many groups x resamples at a time (64 MiB).
_MAX_BLOCK_ELEMENTS = 1 << 23
# Floor of a resample's SE as a fraction of the sample's SE (bootstrap-t only).
MIN_SE_FRACTION = 0.25


class BootstrapCI(BaseModel):
    """Estimate (mean, or ratio of paired means) with its confidence interval.

    `mean` is None when there is no sample; the bounds are None below 2 samples.
    `method` is the method actually used for this interval.
    """

    model_config = ConfigDict(frozen=True)

    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None below 2 samples
    ci_lower: float | None
    ci_upper: float | None
    n: int  # samples (pairs) used, after dropping nulls
    n_dropped: int  # null or non-finite samples (pairs) left out
    confidence: float
    n_resamples: int  # 0 when the method does not resample; distinct resamples when exact
    exact: bool = False  # every distinct resample enumerated with its probability
    method: str = "percentile"
    warning: str | None = None


def choose_method(method: Method, n: int) -> str:
    """The method `auto` stands for at sample size n; other methods stand for themselves."""
    if method != "auto":
        return method
    return "student-t" if n < MIN_BOOTSTRAP_N else "bootstrap-t"


def _clean_pairs(
    numerators: Iterable[Sample], denominators: Iterable[Sample] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Finite (num, den) pairs as float arrays, and how many pairs were dropped."""
    num = np.asarray([math.nan if s is None else float(s) for s in numerators], dtype=float)
    if denominators is None:
        den = np.ones_like(num)
    else:
        den = np.asarray([math.nan if s is None else float(s) for s in denominators], dtype=float)
        if den.size != num.size:
            raise ValueError(f"{num.size} numerators paired with {den.size} denominators")
    keep = np.isfinite(num) & np.isfinite(den)
    return num[keep], den[keep], int(num.size - keep.sum())


def _warning(n: int, n_dropped: int, method: str) -> str | None:
    notes = []
    if n == 0:
        notes.append("no samples")
    elif n == 1:
        notes.append("1 sample: no confidence interval")
    elif n < MIN_BOOTSTRAP_N:
        notes.append(f"{n} samples: fewer than {MIN_BOOTSTRAP_N}, {method} interval, wide")
    if n_dropped:
        notes.append(f"{n_dropped} null sample(s) left out")
    return "; ".join(notes) or None


def _resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n, n_resamples) matrix: the share of each sample in each resample (columns sum to 1)."""
    draws = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    flat = (np.arange(n_resamples)[:, None] * n + draws).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n)
    return counts.T / n


@lru_cache(maxsize=EXACT_MAX_N)
def _exact_resamples(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct resample of n samples: (n, C(2n-1, n)) shares and their probabilities."""
    counts = np.array(
        [
            np.bincount(pick, minlength=n)
            for pick in itertools.combinations_with_replacement(range(n), n)
        ]
    )
    factorials = np.array([math.factorial(k) for k in range(n + 1)], dtype=float)
    probability = math.factorial(n) / factorials[counts].prod(axis=1) / float(n) ** n
    return counts.T / n, probability


def _weighted_quantiles(
    values: np.ndarray, probability: np.ndarray, probs: list[float]
) -> np.ndarray:
    """(groups, len(probs)) quantiles of each row of `values`, atom i having `probability[i]`.

    The p-quantile is the smallest value whose cumulative probability reaches p (the
    inverse CDF, which is what sampled quantiles converge to).
    """
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    cumulative = np.cumsum(probability[order], axis=1)
    # 1e-12: a cumulative sum that should equal p exactly may fall short by rounding
    picks = [(cumulative < p - 1e-12).sum(axis=1, keepdims=True) for p in probs]
    index = np.minimum(np.hstack(picks), values.shape[1] - 1)
    return np.take_along_axis(ordered, index, axis=1)


def _quantiles(
    values: np.ndarray, probability: np.ndarray | None, probs: list[float]
) -> np.ndarray:
    """Row quantiles: weighted over exact resamples, plain over sampled ones (in place)."""
    if probability is None:
        return np.quantile(values, probs, axis=1, overwrite_input=True).T
    return _weighted_quantiles(values, probability, probs)


def _resampled_t_quantiles(
    resid: np.ndarray,
    den: np.ndarray,
    se_sample: np.ndarray,
    weights: np.ndarray,
    probability: np.ndarray | None,
    probs: list[float],
    studentize: bool,
) -> np.ndarray:
    """(groups, len(probs)) quantiles of R* - R (or of t*) for residuals resid = num - R*den.

    Works in place on (groups, resamples) arrays: they are the bulk of the memory and time.
    """
    n = resid.shape[1]
    mean_only = bool(np.all(den == 1.0))  # the CI of a mean: every den term is 1
    shift = resid @ weights  # R* - R, (groups, resamples)
    den_mean = None if mean_only else den @ weights
    if den_mean is not None:
        shift /= den_mean
    if not studentize:
        return _quantiles(shift, probability, probs)
    # Σ w (d*)² with d* = resid - shift*den: the resample's linearized variance times n/(n-1)
    spread = (resid**2) @ weights
    if den_mean is None:
        spread -= shift * shift
    else:
        spread -= 2 * shift * ((resid * den) @ weights)
        spread += shift * shift * ((den**2) @ weights)
    np.clip(spread, 0.0, None, out=spread)
    spread /= n - 1
    se = np.sqrt(spread, out=spread)
    if den_mean is not None:
        se /= den_mean
    # A resample of a few tied values has SE* near 0 and an absurd t*; such resamples
    # would stretch the interval without bound. SE* is floored at a fraction of the
    # sample's SE, which leaves ordinary resamples alone (docs/statistics.md). A sample
    # with SE 0 has all residuals 0, so its t* is 0 whatever the floor (1 here).
    floor = np.where(se_sample > 0, MIN_SE_FRACTION * se_sample, 1.0)
    np.maximum(se, floor[:, None], out=se)
    t = np.divide(shift, se, out=shift)
    return _quantiles(t, probability, probs)


def _bounds(
    resid: np.ndarray,
    den: np.ndarray,
    estimate: np.ndarray,
    se: np.ndarray,
    method: str,
    confidence: float,
    n_resamples: int,
    seed: int,
    exact: bool,
) -> np.ndarray:
    """(groups, 2) lower and upper bounds for same-size groups, n >= 2."""
    n = resid.shape[1]
    alpha = (1.0 - confidence) / 2.0
    if method == "student-t":
        half = t_quantile(1.0 - alpha, n - 1) * se
        return np.column_stack([estimate - half, estimate + half])
    if exact:
        weights, probability = _exact_resamples(n)
    else:
        weights, probability = _resample_weights(n, n_resamples, seed), None
    block = max(1, _MAX_BLOCK_ELEMENTS // weights.shape[1])
    bounds = np.empty((resid.shape[0], 2))
    studentize = method == "bootstrap-t"
    for start in range(0, resid.shape[0], block):
        part = slice(start, start + block)
        q = _resampled_t_quantiles(
            resid[part], den[part], se[part], weights, probability, [alpha, 1 - alpha], studentize
        )
        if studentize:  # [R - q_hi * SE, R - q_lo * SE]
            bounds[part] = estimate[part, None] - q[:, ::-1] * se[part, None]
        else:
            bounds[part] = estimate[part, None] + q
    return bounds


def _same_size_cis(
    num: np.ndarray,
    den: np.ndarray,
    dropped: list[int],
    method: Method,
    confidence: float,
    n_resamples: int,
    seed: int,
    exact_max_n: int,
) -> list[BootstrapCI]:
    """CIs for the rows of `num`/`den`, all of the same sample size."""
    n_groups, n = num.shape
    used = choose_method(method, n)
    exact = used != "student-t" and 2 <= n <= exact_max_n
    if n:
        # Estimate relative to the first pair's ratio: equal samples give an exact result
        # (std 0, not 1e-17) and large values with a small spread lose no precision.
        first = num[:, :1] / den[:, :1]
        estimate = first[:, 0] + (num - first * den).mean(axis=1) / den.mean(axis=1)
    else:
        estimate = np.full(n_groups, np.nan)
    resid = num - estimate[:, None] * den  # d_k = num_k - R * den_k: mean exactly 0 by design
    if n >= 2:
        std = np.sqrt((resid**2).sum(axis=1) / (n - 1)) / den.mean(axis=1)
        se = std / math.sqrt(n)
        bounds = _bounds(resid, den, estimate, se, used, confidence, n_resamples, seed, exact)
    else:
        std, bounds = np.full(n_groups, np.nan), np.full((n_groups, 2), np.nan)
    resamples = 0 if used == "student-t" else n_resamples
    if exact:
        resamples = math.comb(2 * n - 1, n)
    return [
        BootstrapCI.model_construct(  # built from checked values: no validation
            mean=_optional(estimate[i]),
            std=_optional(std[i]),
            ci_lower=_optional(bounds[i, 0]),
            ci_upper=_optional(bounds[i, 1]),
            n=n,
            n_dropped=dropped[i],
            confidence=confidence,
            n_resamples=resamples,
            exact=exact,
            method=used,
            warning=_warning(n, dropped[i], used),
        )
        for i in range(n_groups)
    ]


def _optional(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _check_parameters(confidence: float, n_resamples: int, method: str, exact_max_n: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")
    if exact_max_n > EXACT_MAX_N:
        raise ValueError(f"exact_max_n must be at most {EXACT_MAX_N}, got {exact_max_n!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def ratio_ci_many(
    pairs: Sequence[tuple[Iterable[Sample], Iterable[Sample] | None]],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
    exact_max_n: int = EXACT_MAX_N,
) -> list[BootstrapCI]:
    """CI of mean(num) / mean(den) per (num, den) group, resampling pairs together.

    `den` None means 1 (the CI of the mean of num). A pair with a null in either side
    is left out. Groups are bucketed by their size, each bucket one matrix operation.
    Groups of at most `exact_max_n` samples get the exact bootstrap distribution
    (`n_resamples` and `seed` unused); 0 samples every size.
    """
    _check_parameters(confidence, n_resamples, method, exact_max_n)
    cleaned = [_clean_pairs(num, den) for num, den in pairs]
    buckets: dict[int, list[int]] = defaultdict(list)
    for index, (num, _, _) in enumerate(cleaned):
        buckets[num.size].append(index)
    by_index: dict[int, BootstrapCI] = {}
    for n, indices in buckets.items():
        num = np.array([cleaned[i][0] for i in indices]).reshape(len(indices), n)
        den = np.array([cleaned[i][1] for i in indices]).reshape(len(indices), n)
        dropped = [cleaned[i][2] for i in indices]
        # A denominator of mean 0 (a ratio to nothing) gives no estimate: None, not inf.
        with np.errstate(divide="ignore", invalid="ignore"):
            cis = _same_size_cis(
                num, den, dropped, method, confidence, n_resamples, seed, exact_max_n
            )
        by_index.update(zip(indices, cis, strict=True))
    return [by_index[i] for i in range(len(cleaned))]


def bootstrap_ci_many(
    groups: Sequence[Iterable[Sample]],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
    exact_max_n: int = EXACT_MAX_N,
) -> list[BootstrapCI]:
    """`bootstrap_ci` of every group, in order; groups may differ in size and hold nulls."""
    pairs = [(group, None) for group in groups]
    return ratio_ci_many(pairs, confidence, n_resamples, seed, method, exact_max_n)


def bootstrap_ci(
    samples: Iterable[Sample],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
) -> BootstrapCI:
    """Mean of `samples` with its CI (method per `method`); nulls and NaN are left out.

    Below 2 samples there is no interval (bounds None); below 5 the warning says so.
    """
    return bootstrap_ci_many([samples], confidence, n_resamples, seed, method)[0]
