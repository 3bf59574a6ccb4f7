"""Server mode in the summary: the cheapest config meeting its latency SLO, per hardware.

A server-mode row meets its SLO (the config's `load.slo`) when the whole interval of its
p90 TTFT and of its p90 ITL lies within the deadlines (as `lem recommend` judges); a mean
past a deadline fails; an interval straddling one is unsure. Among those meeting it, the
least mean J/token is picked, with its paired J/token ratio to the baseline config
(results/compare.py). With no energy meter (J/token null) the table says so, picking none.
See docs/server-mode.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel

from llenergymeasure.results.compare import PairedRatio
from llenergymeasure.stats.bootstrap import BootstrapCI


class SummaryRow(Protocol):
    """What this reads of results/aggregate.py's SummaryRow (which imports this module)."""

    config_name: str
    hardware: str
    metrics: dict[str, BootstrapCI]
    slo: dict[str, float] | None


ENERGY = "j_per_output_token"
# SLO key -> the summary metric (seconds) it bounds
SLO_METRICS = {"ttft_ms": "ttft_p90_s", "itl_ms": "itl_p90_s"}


class CheapestMeetingSlo(BaseModel):
    """One hardware and SLO: the least-J/token config meeting it, or why there is none."""

    hardware: str
    slo: dict[str, float]  # ttft_ms, itl_ms (p90s must meet them)
    pick: str | None = None
    energy: BootstrapCI | None = None  # the pick's J / output token
    latency: dict[str, BootstrapCI] = {}  # the pick's ttft_p90_s, itl_p90_s
    baseline: str | None = None
    versus_baseline: BootstrapCI | None = None  # pick / baseline J/token, paired by cycle
    meets: list[str] = []
    unsure: list[str] = []
    reason: str | None = None  # why there is no pick


def _verdict(row: SummaryRow, slo: dict[str, float]) -> bool | None:
    """True: each p90 interval lies within its deadline; False: a mean misses; None: unsure."""
    verdict: bool | None = True
    for key, metric in SLO_METRICS.items():
        ci, bound = row.metrics[metric], slo[key] / 1000.0
        if ci.mean is None or ci.mean > bound:
            return False
        if ci.ci_upper is None or ci.ci_upper > bound:
            verdict = None
    return verdict


def _versus(pick: str, hardware: str, comparisons: Sequence[PairedRatio]) -> BootstrapCI | None:
    return next(
        (
            r.ratio
            for r in comparisons
            if (r.config_name, r.hardware, r.metric) == (pick, hardware, ENERGY)
        ),
        None,
    )


def _answer(
    hardware: str,
    slo: dict[str, float],
    rows: Sequence[SummaryRow],
    baseline: str | None,
    comparisons: Sequence[PairedRatio],
) -> CheapestMeetingSlo:
    verdicts = {row.config_name: _verdict(row, slo) for row in rows}
    meeting = [row for row in rows if verdicts[row.config_name] is True]
    answer = CheapestMeetingSlo(
        hardware=hardware,
        slo=slo,
        baseline=baseline,
        meets=[row.config_name for row in meeting],
        unsure=sorted(name for name, verdict in verdicts.items() if verdict is None),
    )
    if not meeting:
        answer.reason = "none meets the SLO (p90 TTFT and p90 ITL intervals within it)"
        return answer
    priced = [row for row in meeting if row.metrics[ENERGY].mean is not None]
    if not priced:
        answer.reason = "no energy meter on this hardware (J/token not measured): no pick"
        return answer
    best = min(priced, key=lambda row: row.metrics[ENERGY].mean or 0.0)
    answer.pick = best.config_name
    answer.energy = best.metrics[ENERGY]
    answer.latency = {metric: best.metrics[metric] for metric in SLO_METRICS.values()}
    if baseline is not None and baseline != best.config_name:
        answer.versus_baseline = _versus(best.config_name, hardware, comparisons)
    return answer


def cheapest_meeting_slo(
    rows: Sequence[SummaryRow], baseline: str | None, comparisons: Sequence[PairedRatio]
) -> list[CheapestMeetingSlo]:
    """Per (hardware, SLO) of the server-mode rows that have an SLO: the cheapest pick."""
    groups: dict[tuple[str, tuple[tuple[str, float], ...]], list[SummaryRow]] = defaultdict(list)
    for row in rows:
        if row.slo is not None:
            groups[(row.hardware, tuple(sorted(row.slo.items())))].append(row)
    return [
        _answer(hardware, dict(slo), members, baseline, comparisons)
        for (hardware, slo), members in sorted(groups.items())
    ]
