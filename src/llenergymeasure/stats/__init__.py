"""Statistics: bootstrap confidence intervals."""
