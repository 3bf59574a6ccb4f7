"""Statistics: bootstrap confidence intervals."""

from llenergymeasure.stats.bootstrap import BootstrapCI, bootstrap_ci, bootstrap_ci_many

__all__ = ["BootstrapCI", "bootstrap_ci", "bootstrap_ci_many"]
