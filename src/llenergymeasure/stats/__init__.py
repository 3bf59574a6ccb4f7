"""Statistics: confidence intervals of means and of paired ratios."""

from llenergymeasure.stats.bootstrap import (
    METHODS,
    MIN_BOOTSTRAP_N,
    BootstrapCI,
    Method,
    bootstrap_ci,
    bootstrap_ci_many,
    choose_method,
    ratio_ci_many,
)
from llenergymeasure.stats.tdist import t_quantile

__all__ = [
    "METHODS",
    "MIN_BOOTSTRAP_N",
    "BootstrapCI",
    "Method",
    "bootstrap_ci",
    "bootstrap_ci_many",
    "choose_method",
    "ratio_ci_many",
    "t_quantile",
]
