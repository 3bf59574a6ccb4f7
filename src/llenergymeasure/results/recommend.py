"""What a GPU knob sweep answers (docs/knobs.md): the energy-latency Pareto front per
(model, backend, hardware), and the least-J/token config that meets a latency SLO.

Both read the results through their cycles: each config's J/token and latency get a CI
over cycles; a config meets the SLO only when the whole interval of its latency lies
within it; the pick is compared with the baseline config (by default the one that leaves
the GPU as it is) and with the next-cheapest config meeting the SLO, paired by cycle. When
the data cannot tell them apart, the answer says so instead of naming a winner.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from llenergymeasure.contracts.result import Distribution, ExperimentResult
from llenergymeasure.errors import LemError
from llenergymeasure.stats.bootstrap import BootstrapCI, Method, bootstrap_ci_many, ratio_ci_many

ENERGY_METRIC = "j_per_output_token"
# The SLO vocabulary: <quantity>_<statistic>_ms, e.g. itl_p90_ms, ttft_p99_ms, e2e_p50_ms.
SLO_QUANTITIES: dict[str, Callable[[ExperimentResult], Distribution]] = {
    "ttft": lambda r: r.ttft,
    "itl": lambda r: r.itl,
    "e2e": lambda r: r.latency,
}
SLO_STATISTICS = ("mean", "p50", "p90", "p99")
_SLO_KEY = re.compile(r"^(?P<quantity>[a-z0-9]+)_(?P<stat>[a-z0-9]+)_ms$")
DEFAULT_LATENCY = "itl_p90_ms"  # the Pareto front's latency axis: decode speed
MIN_CYCLES = 3

GroupKey = tuple[str, str, str]  # (model, backend, hardware)


class RecommendError(LemError):
    """A bad SLO or baseline, or nothing to recommend from."""


def slo_metric(key: str) -> Callable[[ExperimentResult], float | None]:
    """The per-result value (ms) of an SLO key such as ``itl_p90_ms``; RecommendError
    naming the key and the vocabulary when it is not one."""
    match = _SLO_KEY.fullmatch(key)
    if not match or match["quantity"] not in SLO_QUANTITIES or match["stat"] not in SLO_STATISTICS:
        raise RecommendError(
            f"--slo {key}: not an SLO key; use <{'|'.join(SLO_QUANTITIES)}>_"
            f"<{'|'.join(SLO_STATISTICS)}>_ms, e.g. itl_p90_ms=50"
        )
    quantity, stat = SLO_QUANTITIES[match["quantity"]], match["stat"]

    def value(result: ExperimentResult) -> float | None:
        seconds = getattr(quantity(result), stat)
        return None if seconds is None else seconds * 1000.0

    return value


def parse_slo(texts: Sequence[str]) -> dict[str, float]:
    """``["itl_p90_ms=50"]`` -> ``{"itl_p90_ms": 50.0}``, each key checked."""
    slo = {}
    for text in texts:
        key, _, bound = text.partition("=")
        slo_metric(key)
        try:
            slo[key] = float(bound)
        except ValueError:
            raise RecommendError(f"--slo {text}: expected KEY=NUMBER, e.g. itl_p90_ms=50") from None
    if not slo:
        raise RecommendError("give at least one --slo KEY=NUMBER, e.g. itl_p90_ms=50")
    return slo


@dataclass
class Candidate:
    """One config on one hardware: its GPU setting and its cycles' results."""

    config_name: str
    model: str
    backend: str
    hardware: str
    gpu: dict[str, int]
    results: list[ExperimentResult]
    energy: BootstrapCI | None = None
    latency: dict[str, BootstrapCI] = field(default_factory=dict)

    @property
    def group(self) -> GroupKey:
        return (self.model, self.backend, self.hardware)

    def setting_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.gpu.items())) or "GPU as it is"

    def by_cycle(self, value: Callable[[ExperimentResult], float | None]) -> dict[int, float]:
        return {
            r.identity.cycle: v
            for r in self.results
            if r.identity.cycle is not None and (v := value(r)) is not None
        }


def candidates(
    results: Sequence[ExperimentResult],
    latency_keys: Sequence[str],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
) -> list[Candidate]:
    """Every (config, hardware) with the CI of its J/token and of each latency key."""
    grouped: dict[tuple[str, str, str], list[ExperimentResult]] = defaultdict(list)
    for result in results:
        key = (result.identity.config_name, result.environment.hardware, result.identity.backend)
        grouped[key].append(result)
    found = []
    for (name, hardware, backend), members in sorted(grouped.items()):
        config = members[0].config
        gpu = {k: int(v) for k, v in (config.get("gpu") or {}).items() if v is not None}
        model = str((config.get("model") or {}).get("path", "?"))
        found.append(Candidate(name, model, backend, hardware, gpu, members))
    metrics = [(ENERGY_METRIC, _energy)] + [(key, slo_metric(key)) for key in latency_keys]
    samples = [[value(r) for r in c.results] for c in found for _, value in metrics]
    cis = iter(bootstrap_ci_many(samples, confidence, n_resamples, seed, method))
    for candidate in found:
        candidate.energy = next(cis)
        candidate.latency = {key: next(cis) for key, _ in metrics[1:]}
    return found


def _energy(result: ExperimentResult) -> float | None:
    return result.energy.j_per_output_token


def _finite(ci: BootstrapCI | None) -> bool:
    return ci is not None and ci.mean is not None


def pareto(group: Sequence[Candidate], latency_key: str = DEFAULT_LATENCY) -> list[Candidate]:
    """The candidates no other beats on both mean J/token and mean latency, by latency."""
    drawable = [c for c in group if _finite(c.energy) and _finite(c.latency.get(latency_key))]

    def point(c: Candidate) -> tuple[float, float]:
        return (c.latency[latency_key].mean or 0.0, c.energy.mean or 0.0)  # type: ignore[union-attr]

    front = [
        c
        for c in drawable
        if not any(
            point(o)[0] <= point(c)[0] and point(o)[1] <= point(c)[1] and point(o) != point(c)
            for o in drawable
        )
    ]
    return sorted(front, key=point)


def pareto_fronts(
    found: Sequence[Candidate], latency_key: str = DEFAULT_LATENCY
) -> dict[GroupKey, list[Candidate]]:
    """The front of each (model, backend, hardware): knob settings are compared only there."""
    groups: dict[GroupKey, list[Candidate]] = defaultdict(list)
    for candidate in found:
        groups[candidate.group].append(candidate)
    return {key: pareto(members, latency_key) for key, members in sorted(groups.items())}


class ParetoPoint(BaseModel):
    """A config on the energy-latency front of its (model, backend, hardware), for the summary."""

    model: str
    backend: str
    hardware: str
    config_name: str
    gpu: dict[str, int]
    energy: BootstrapCI  # J / output token
    latency_key: str
    latency: BootstrapCI  # ms


def is_sweep(group: Sequence[Candidate]) -> bool:
    """True when the group's configs differ in GPU setting (a knob sweep)."""
    return len({tuple(sorted(c.gpu.items())) for c in group}) > 1


def pareto_summary(
    results: Sequence[ExperimentResult],
    latency_key: str = DEFAULT_LATENCY,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
) -> list[ParetoPoint]:
    """The front of every (model, backend, hardware) that sweeps a GPU knob; [] otherwise."""
    found = candidates(results, [latency_key], confidence, n_resamples, seed, method)
    points = []
    for (model, backend, hardware), front in pareto_fronts(found, latency_key).items():
        if not is_sweep([c for c in found if c.group == (model, backend, hardware)]):
            continue
        points.extend(
            ParetoPoint(
                model=model,
                backend=backend,
                hardware=hardware,
                config_name=c.config_name,
                gpu=c.gpu,
                energy=c.energy,  # type: ignore[arg-type]
                latency_key=latency_key,
                latency=c.latency[latency_key],
            )
            for c in front
        )
    return points


@dataclass
class Recommendation:
    """The answer for one (model, backend, hardware)."""

    group: GroupKey
    slo: dict[str, float]
    pick: Candidate | None
    baseline: Candidate | None
    versus_baseline: BootstrapCI | None  # J/token ratio pick / baseline, paired by cycle
    runner_up: Candidate | None
    versus_runner_up: BootstrapCI | None
    meets: list[str]  # configs whose whole latency interval meets the SLO
    unsure: list[str]  # configs whose latency interval straddles the SLO
    weak_reasons: list[str]

    @property
    def decided(self) -> bool:
        return self.pick is not None and not self.weak_reasons


def _meets(candidate: Candidate, slo: dict[str, float]) -> bool | None:
    """True: every latency CI lies within its bound; False: a mean is out; None: unsure."""
    verdict: bool | None = True
    for key, bound in slo.items():
        ci = candidate.latency[key]
        if ci.mean is None or ci.mean > bound:
            return False
        if ci.ci_upper is None or ci.ci_upper > bound:
            verdict = None
    return verdict


def _paired_ratio(
    a: Candidate, b: Candidate, confidence: float, n_resamples: int, seed: int, method: Method
) -> BootstrapCI | None:
    mine, theirs = a.by_cycle(_energy), b.by_cycle(_energy)
    cycles = sorted(set(mine) & set(theirs))
    if not cycles:
        return None
    pair = ([mine[c] for c in cycles], [theirs[c] for c in cycles])
    return ratio_ci_many([pair], confidence, n_resamples, seed, method)[0]


def _baseline_of(group: Sequence[Candidate], baseline: str | None) -> Candidate | None:
    if baseline is not None:
        return next((c for c in group if c.config_name == baseline), None)
    untouched = [c for c in group if not c.gpu]
    return untouched[0] if len(untouched) == 1 else None


def _excludes_one(ci: BootstrapCI | None) -> bool:
    return ci is not None and (
        (ci.ci_upper is not None and ci.ci_upper < 1.0)
        or (ci.ci_lower is not None and ci.ci_lower > 1.0)
    )


def recommend(
    results: Sequence[ExperimentResult],
    slo: dict[str, float],
    baseline: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
) -> list[Recommendation]:
    """Per (model, backend, hardware): the least mean J/token config meeting `slo`."""
    stats = (confidence, n_resamples, seed, method)
    found = candidates(results, list(slo), *stats)
    if not found:
        raise RecommendError("no results to recommend from")
    groups: dict[GroupKey, list[Candidate]] = defaultdict(list)
    for candidate in found:
        groups[candidate.group].append(candidate)
    answers = []
    for key, group in sorted(groups.items()):
        verdicts = {c.config_name: _meets(c, slo) for c in group}
        meeting = sorted(
            (c for c in group if verdicts[c.config_name] is True and _finite(c.energy)),
            key=lambda c: c.energy.mean,  # type: ignore[union-attr,return-value]
        )
        pick = meeting[0] if meeting else None
        runner_up = meeting[1] if len(meeting) > 1 else None
        base = _baseline_of(group, baseline)
        answer = Recommendation(
            group=key,
            slo=slo,
            pick=pick,
            baseline=base,
            versus_baseline=None
            if pick is None or base is None or base is pick
            else _paired_ratio(pick, base, *stats),
            runner_up=runner_up,
            versus_runner_up=None
            if pick is None or runner_up is None
            else _paired_ratio(pick, runner_up, *stats),
            meets=[c.config_name for c in meeting],
            unsure=sorted(name for name, verdict in verdicts.items() if verdict is None),
            weak_reasons=[],
        )
        answer.weak_reasons = _weak_reasons(answer)
        answers.append(answer)
    return answers


def _weak_reasons(answer: Recommendation) -> list[str]:
    """Why the data cannot name a winner (empty: it can)."""
    reasons = []
    if answer.pick is None:
        reasons.append("no config's latency interval lies within the SLO")
        if answer.unsure:
            reasons.append(f"unsure (interval straddles the SLO): {', '.join(answer.unsure)}")
        return reasons
    cycles = len(answer.pick.by_cycle(_energy))
    if cycles < MIN_CYCLES:
        reasons.append(f"{answer.pick.config_name} has {cycles} cycle(s); at least {MIN_CYCLES}")
    if answer.runner_up is not None and not _excludes_one(answer.versus_runner_up):
        reasons.append(
            f"{answer.pick.config_name} and {answer.runner_up.config_name} cannot be told apart "
            "on J/token (the paired interval of their ratio includes 1): run more cycles"
        )
    if answer.unsure:
        reasons.append(
            f"{', '.join(answer.unsure)}: latency interval straddles the SLO (might meet it)"
        )
    return reasons


def _ratio_text(ci: BootstrapCI | None) -> str:
    if ci is None or ci.mean is None:
        return "n/a"
    if ci.ci_lower is None or ci.ci_upper is None:
        return f"{ci.mean:.3f} (no interval)"
    return f"{ci.mean:.3f} [{ci.ci_lower:.3f}, {ci.ci_upper:.3f}]"


def recommendation_lines(answer: Recommendation) -> list[str]:
    """The answer in words, one fact a line."""
    model, backend, hardware = answer.group
    slo = ", ".join(f"{k} <= {v:g}" for k, v in answer.slo.items())
    lines = [f"{model} / {backend} on {hardware}, SLO {slo}:"]
    pick = answer.pick
    if pick is None:
        lines.append("  no recommendation: " + "; ".join(answer.weak_reasons))
        return lines
    energy = pick.energy
    lines.append(
        f"  {'recommended' if answer.decided else 'cheapest meeting the SLO (evidence too weak)'}"
        f": {pick.config_name} ({pick.setting_text()}), "
        f"{energy.mean:.4g} J/token"  # type: ignore[union-attr]
    )
    if answer.baseline is not None and answer.baseline is not pick:
        lines.append(
            f"  vs baseline {answer.baseline.config_name}: J/token ratio "
            f"{_ratio_text(answer.versus_baseline)} (paired by cycle)"
        )
    elif answer.baseline is pick:
        lines.append("  the baseline itself is the cheapest config meeting the SLO")
    else:
        lines.append(
            "  no baseline here: no single config leaves the GPU as it is (name one with "
            "--baseline)"
        )
    if answer.runner_up is not None:
        lines.append(
            f"  vs next {answer.runner_up.config_name}: {_ratio_text(answer.versus_runner_up)}"
        )
    lines.extend(f"  evidence too weak: {reason}" for reason in answer.weak_reasons)
    return lines
