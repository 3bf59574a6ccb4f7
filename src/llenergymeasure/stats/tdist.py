"""Quantiles of Student's t distribution for integer degrees of freedom, without scipy.

For an integer df the two-sided probability P(|T| <= t) has a closed form as a finite
sum in theta = atan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3-4); the quantile is found
by bisection on it, which is exact to float precision and cached per (p, df).
"""

from __future__ import annotations

import math
from functools import lru_cache


def _two_sided_probability(t: float, df: int) -> float:
    """P(|T| <= t) for T ~ Student-t with `df` degrees of freedom, t >= 0."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin(theta) * (1 + cos^2/2 + 1*3 cos^4/(2*4) + ...), df/2 terms
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        return sin * total
    # odd: (2/pi) * (theta + sin*cos*(1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), (df-1)/2 terms
    term, total = 1.0, 1.0 if df > 1 else 0.0
    for k in range(1, (df - 1) // 2):
        term *= cos2 * (2 * k) / (2 * k + 1)
        total += term
    return 2.0 / math.pi * (theta + sin * math.cos(theta) * total)


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` >= 1 degrees of freedom, 0 < p < 1."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be between 0 and 1 (exclusive), got {p!r}")
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df!r}")
    if p == 0.5:
        return 0.0
    target = abs(2.0 * p - 1.0)  # P(|T| <= q) for the upper quantile q
    low, high = 0.0, 1.0
    while _two_sided_probability(high, df) < target:
        high *= 2.0
    for _ in range(200):  # bisection to float resolution
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if _two_sided_probability(middle, df) < target:
            low = middle
        else:
            high = middle
    quantile = (low + high) / 2.0
    return quantile if p > 0.5 else -quantile
