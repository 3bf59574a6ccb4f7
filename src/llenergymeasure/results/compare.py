"""Paired comparisons: each config's metrics as a ratio to a baseline config's, cycle by cycle.

Cycles are interleaved, so cycle k of config A and cycle k of the baseline ran under the
same conditions (temperature, clocks, neighbours). The ratio of means is estimated over
the cycles both have, and its interval resamples those cycles together (pairs), so shared
cycle-to-cycle drift cancels. Only results on the same hardware are compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, computed_field

from llenergymeasure.contracts.result import HEADLINE_METRICS, ExperimentResult
from llenergymeasure.stats.bootstrap import BootstrapCI, Method, ratio_ci_many
from llenergymeasure.stats.power import cycles_needed, detectable_difference, paired_difference_cv

# The metrics compared (load time and requests/s add nothing to these).
COMPARED_METRICS: tuple[str, ...] = tuple(
    metric for metric in HEADLINE_METRICS if metric not in {"requests_per_s", "load_seconds"}
)

GroupKey = tuple[str, str, str]  # (config_name, hardware, config_hash)
# The fewest cycles a campaign should run for an interval at all (docs: 3 for a CI).
MIN_SUGGESTED_CYCLES = 3


class PairedRatio(BaseModel):
    """mean(config) / mean(baseline) of one metric over the cycles both ran."""

    config_name: str
    hardware: str
    baseline: str
    metric: str
    cycles: list[int]  # the cycles paired
    ratio: BootstrapCI  # `mean` is the ratio
    # sd(config_k - baseline_k) / |mean(baseline)|: what the cycles needed follow from
    difference_cv: float | None = None
    # smallest relative difference these pairs detect (alpha 0.05 two-sided, power 0.8)
    detectable: float | None = None
    # cycles needed to detect the stated difference (`detect`), when one was stated
    cycles_needed: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def excludes_one(self) -> bool | None:
        """True when the interval lies wholly above or below 1; None without an interval."""
        low, high = self.ratio.ci_lower, self.ratio.ci_upper
        if low is None or high is None:
            return None
        return low > 1.0 or high < 1.0


def _by_cycle(results: Sequence[ExperimentResult]) -> dict[int, dict[str, float | None]]:
    return {r.identity.cycle: r.headline_metrics() for r in results if r.identity.cycle is not None}


def _baselines(
    groups: Mapping[GroupKey, Sequence[ExperimentResult]], baseline: str
) -> tuple[dict[str, GroupKey], list[str]]:
    """The baseline's group per hardware (the one with most results), and warnings."""
    found: dict[str, list[GroupKey]] = {}
    for key in groups:
        if key[0] == baseline:
            found.setdefault(key[1], []).append(key)
    warnings = []
    chosen = {}
    for hardware, keys in found.items():
        chosen[hardware] = max(keys, key=lambda k: (len(groups[k]), k[2]))
        if len(keys) > 1:
            warnings.append(
                f"baseline {baseline!r} on {hardware} has {len(keys)} config hashes: "
                f"compared with {chosen[hardware][2]} ({len(groups[chosen[hardware]])} results)"
            )
    hardware_without = sorted({k[1] for k in groups} - set(found))
    if not found:
        warnings.append(f"baseline {baseline!r}: no results, nothing compared")
    elif hardware_without:
        warnings.append(f"baseline {baseline!r} has no results on {', '.join(hardware_without)}")
    return chosen, warnings


def paired_ratios(
    groups: Mapping[GroupKey, Sequence[ExperimentResult]],
    baseline: str,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
    detect: float | None = None,
) -> tuple[list[PairedRatio], list[str]]:
    """Every other config's ratio to `baseline` on the same hardware, per metric; warnings.

    Each ratio also says the smallest difference its pairs can detect and, with `detect`
    (a relative difference, 0.05 for 5 %), how many cycles detecting that would need.
    """
    chosen, warnings = _baselines(groups, baseline)
    jobs: list[tuple[GroupKey, list[int], str]] = []
    pairs = []
    for key in sorted(groups):
        base_key = chosen.get(key[1])
        if base_key is None or key == base_key:
            continue
        mine, theirs = _by_cycle(groups[key]), _by_cycle(groups[base_key])
        cycles = sorted(set(mine) & set(theirs))
        if not cycles:
            warnings.append(f"{key[0]} on {key[1]}: no cycle in common with {baseline!r}")
            continue
        for metric in COMPARED_METRICS:
            jobs.append((key, cycles, metric))
            pairs.append(([mine[c][metric] for c in cycles], [theirs[c][metric] for c in cycles]))
    cis = ratio_ci_many(pairs, confidence, n_resamples, seed, method)
    ratios = []
    for (key, cycles, metric), ci, (mine_values, base_values) in zip(jobs, cis, pairs, strict=True):
        cv = paired_difference_cv(mine_values, base_values)
        ratios.append(
            PairedRatio(
                config_name=key[0],
                hardware=key[1],
                baseline=baseline,
                metric=metric,
                cycles=cycles,
                ratio=ci,
                difference_cv=cv,
                detectable=detectable_difference(cv, ci.n, method=method),
                cycles_needed=None if detect is None else cycles_needed(cv, detect, method=method),
            )
        )
    return ratios, warnings


def suggested_cycles(ratios: Sequence[PairedRatio]) -> int | None:
    """Cycles for every comparison in `ratios` to detect the stated difference (at least 3).

    None when one of them would need more than MAX_CYCLES, or none has a known CV.
    """
    known = [ratio for ratio in ratios if ratio.difference_cv is not None]
    if not known or any(ratio.cycles_needed is None for ratio in known):
        return None
    return max(MIN_SUGGESTED_CYCLES, *(ratio.cycles_needed or 0 for ratio in known))
