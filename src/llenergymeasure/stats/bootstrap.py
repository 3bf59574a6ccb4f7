"""Percentile bootstrap confidence intervals of the mean, vectorized with numpy.

Resampling draws one index matrix ``rng.integers(0, n, (n_resamples, n))`` per
sample size; the resample means of many groups of that size are then one
matrix product with the matrix of draw counts. There is no Python loop over
resamples. Every group of a given size sees the same draws as a single call
with the same seed, so ``bootstrap_ci_many(groups)[i] == bootstrap_ci(groups[i])``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

Sample = float | int | None

# Resample means are computed for this many groups x resamples at a time (64 MiB).
_MAX_BLOCK_ELEMENTS = 1 << 23


class BootstrapCI(BaseModel):
    """Mean of the samples with its percentile-bootstrap confidence interval.

    `mean` is None when there is no sample; the bounds are None below 2 samples.
    """

    model_config = ConfigDict(frozen=True)

    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None below 2 samples
    ci_lower: float | None
    ci_upper: float | None
    n: int  # samples used, after dropping nulls
    n_dropped: int  # null or non-finite samples left out
    confidence: float
    n_resamples: int
    method: str = "percentile"
    warning: str | None = None


def _clean(samples: Iterable[Sample]) -> tuple[np.ndarray, int]:
    """The finite samples as floats, and how many null or non-finite ones were dropped."""
    values = [math.nan if s is None else float(s) for s in samples]
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return finite, array.size - finite.size


def _warning(n: int, n_dropped: int) -> str | None:
    notes = []
    if n == 0:
        notes.append("no samples")
    elif n == 1:
        notes.append("1 sample: no confidence interval")
    elif n < 3:
        notes.append(f"{n} samples: CI unreliable (fewer than 3)")
    if n_dropped:
        notes.append(f"{n_dropped} null sample(s) left out")
    return "; ".join(notes) or None


def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) matrix: how often each sample was drawn in each resample."""
    draws = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    flat = (np.arange(n_resamples)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(float)


def _percentile_bounds(
    data: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> np.ndarray:
    """(groups, 2) lower and upper bounds for the rows of `data` (groups, n), n >= 2."""
    n = data.shape[1]
    weights = _resample_counts(n, n_resamples, seed).T / n  # (n, n_resamples)
    alpha = (1.0 - confidence) / 2.0
    block = max(1, _MAX_BLOCK_ELEMENTS // n_resamples)
    bounds = np.empty((data.shape[0], 2))
    for start in range(0, data.shape[0], block):
        means = data[start : start + block] @ weights  # (block, n_resamples)
        quantiles = np.quantile(means, [alpha, 1.0 - alpha], axis=1, overwrite_input=True)
        bounds[start : start + block] = quantiles.T
    return bounds


def _same_size_cis(
    data: np.ndarray, dropped: list[int], confidence: float, n_resamples: int, seed: int
) -> list[BootstrapCI]:
    """CIs for the rows of `data`, all of the same sample size."""
    n_groups, n = data.shape
    # Shifting by the first sample keeps equal samples exact (std 0, not 1e-17) and
    # loses no precision on large values with small spread.
    shifted = data - data[:, :1] if n else data
    means = data[:, 0] + shifted.mean(axis=1) if n else np.full(n_groups, np.nan)
    stds = shifted.std(axis=1, ddof=1) if n >= 2 else np.full(n_groups, np.nan)
    bounds = (
        data[:, :1] + _percentile_bounds(shifted, confidence, n_resamples, seed)
        if n >= 2
        else np.full((n_groups, 2), np.nan)
    )
    return [
        BootstrapCI(
            mean=_optional(means[i]),
            std=_optional(stds[i]),
            ci_lower=_optional(bounds[i, 0]),
            ci_upper=_optional(bounds[i, 1]),
            n=n,
            n_dropped=dropped[i],
            confidence=confidence,
            n_resamples=n_resamples,
            warning=_warning(n, dropped[i]),
        )
        for i in range(n_groups)
    ]


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _check_parameters(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")


def bootstrap_ci_many(
    groups: Sequence[Iterable[Sample]],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
) -> list[BootstrapCI]:
    """`bootstrap_ci` of every group, in order; groups may differ in size and hold nulls.

    Groups are bucketed by their size after dropping nulls, and each bucket is
    resampled as one matrix operation.
    """
    _check_parameters(confidence, n_resamples)
    cleaned = [_clean(group) for group in groups]
    buckets: dict[int, list[int]] = defaultdict(list)
    for index, (values, _) in enumerate(cleaned):
        buckets[values.size].append(index)
    by_index: dict[int, BootstrapCI] = {}
    for n, indices in buckets.items():
        data = np.array([cleaned[i][0] for i in indices]).reshape(len(indices), n)
        dropped = [cleaned[i][1] for i in indices]
        cis = _same_size_cis(data, dropped, confidence, n_resamples, seed)
        by_index.update(zip(indices, cis, strict=True))
    return [by_index[i] for i in range(len(cleaned))]


def bootstrap_ci(
    samples: Iterable[Sample],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
) -> BootstrapCI:
    """Mean of `samples` with its percentile-bootstrap CI; nulls and NaN are left out.

    Below 2 samples there is no interval (bounds None); below 3 the warning says
    the interval is unreliable.
    """
    return bootstrap_ci_many([samples], confidence, n_resamples, seed)[0]
