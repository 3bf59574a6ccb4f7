"""Commands: `lem aggregate` (intervals over cycles), `lem compare` (paired ratios to a
baseline config), `lem report` (report.html with figures) and `lem recommend` (the cheapest
config meeting a latency SLO)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from llenergymeasure.commands.common import fail, reports_errors
from llenergymeasure.results.aggregate import (
    Summary,
    aggregate_directory,
    load_result_files,
    render_comparisons,
    render_table,
    write_summary,
)
from llenergymeasure.results.recommend import parse_slo, recommendation_lines
from llenergymeasure.results.recommend import recommend as recommend_configs
from llenergymeasure.stats.bootstrap import METHODS, Method

RESULTS_DIR = typer.Argument(
    ..., help="Directory searched recursively for result.json files.", show_default=False
)
CONFIDENCE = typer.Option(
    0.95, "--confidence", min=0.5, max=0.999, help="Confidence level of the intervals."
)
RESAMPLES = typer.Option(
    10_000,
    "--resamples",
    min=100,
    help="Bootstrap resamples above 8 cycles; up to 8 every distinct resample is enumerated.",
)
SEED = typer.Option(42, "--seed", help="Seed of the bootstrap resampling (above 8 cycles).")
SLO_HELP = "KEY=MS, repeatable: <ttft|itl|e2e>_<mean|p50|p90|p99>_ms, e.g. itl_p90_ms=50."
METHOD = typer.Option(
    "auto",
    "--method",
    help=f"Interval method: {', '.join(METHODS)}. auto: Student-t below 5 cycles, "
    "studentized bootstrap from 5 (docs/statistics.md).",
)


DETECT = typer.Option(
    None,
    "--detect",
    help="A difference to detect, e.g. 5% or 0.05: add the cycles each paired comparison "
    "needs to detect it (alpha 0.05 two-sided, power 0.8).",
)


def parse_difference(text: str | None) -> float | None:
    """'5%' or '0.05' as 0.05; a clear error otherwise."""
    if text is None:
        return None
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise fail(f"--detect: {text!r} is not a difference such as 5% or 0.05") from None
    if not 0 < value < 10:
        raise fail(f"--detect: {text!r} must be a positive relative difference (5% = 0.05)")
    return value


def _method(name: str) -> Method:
    if name not in METHODS:
        raise fail(f"--method: {name!r} is not one of {', '.join(METHODS)}")
    return name  # type: ignore[return-value]


def _summary(
    results_dir: Path,
    baseline: str | None,
    confidence: float,
    resamples: int,
    seed: int,
    method: str,
    detect: str | None = None,
) -> Summary:
    """The summary of `results_dir`; exits 1 when it holds no readable result."""
    summary = aggregate_directory(
        results_dir,
        confidence=confidence,
        n_resamples=resamples,
        seed=seed,
        method=_method(method),
        baseline=baseline,
        detect=parse_difference(detect),
    )
    if not summary.rows:
        raise fail(f"{results_dir}: no readable result.json found", code=1)
    return summary


def aggregate(
    results_dir: Path = RESULTS_DIR,
    out: Path | None = typer.Option(
        None, "--out", help="Directory for summary.json, .csv and .md; defaults to RESULTS_DIR."
    ),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="Config name: add each config's paired ratio to it (and write comparison.csv).",
    ),
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    method: str = METHOD,
    detect: str | None = DETECT,
) -> None:
    """Aggregate result.json files into a CI per config, hardware and metric.

    Results are grouped by config and hardware (never pooled across GPU models);
    null metrics are left out, and a metric null in every cycle prints n/a. Writes
    summary.json, summary.csv and summary.md and prints the table. A file that
    cannot be read is reported and skipped. Server-mode results add their serving
    metrics (rate, latency percentiles, SLO attainment, goodput, window) and the
    cheapest config meeting the SLO per hardware (docs/server-mode.md).

    Example: lem aggregate results/demo --out results/demo
    """
    summary = _summary(results_dir, baseline, confidence, resamples, seed, method, detect)
    sys.stdout.write(render_table(summary))
    for path in write_summary(summary, out or results_dir):
        typer.echo(f"wrote {path}")


def compare(
    results_dir: Path = RESULTS_DIR,
    baseline: str = typer.Option(
        ..., "--baseline", help="Config name every other config is compared with."
    ),
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    method: str = METHOD,
    detect: str | None = DETECT,
) -> None:
    """Each config's metrics as a ratio to a baseline config, paired by cycle.

    For each config and metric: mean(config) / mean(baseline) over the cycles both
    ran on the same hardware, its CI (cycles resampled together, so drift shared by
    a cycle cancels), whether the CI excludes 1, and the smallest difference these
    cycles can detect (alpha 0.05 two-sided, power 0.8, from the CV of the paired
    differences); with --detect, the cycles needed to detect that difference. Exits 1
    when nothing could be compared (e.g. the baseline has no results).

    Example: lem compare results/demo --baseline tiny-bs1 --detect 5%
    """
    summary = _summary(results_dir, baseline, confidence, resamples, seed, method, detect)
    sys.stdout.write(render_comparisons(summary))
    if not summary.comparisons:
        raise fail(f"nothing compared with baseline {baseline!r}", code=1)


def report(
    results_dir: Path = RESULTS_DIR,
    out: Path | None = typer.Option(
        None, "--out", help="Directory for report.html and figures/; defaults to RESULTS_DIR."
    ),
    baseline: str | None = typer.Option(
        None, "--baseline", help="Config name: add the paired ratios to it."
    ),
    slo: list[str] = typer.Option([], "--slo", help="Add the recommendation: " + SLO_HELP),
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    method: str = METHOD,
) -> None:
    """Write report.html (self-contained: figures inlined) and figures/*.png.

    Figures: J per output token (raw and idle-adjusted) per GPU model, energy
    against latency with the Pareto front, the Pareto front of each GPU knob sweep,
    throughput, one power trace per config, every cycle in run order; for server-mode
    results, J/token, latency percentiles and SLO attainment against the achieved rate
    per (model, backend, hardware) and the cheapest config meeting the SLO; with --slo, the
    cheapest config meeting it (as `lem recommend`); then the campaign's facts, warnings
    and failures. Panels without data (no energy source, no power samples) say so in words.

    Example: lem report results/demo
    """
    try:  # matplotlib comes with the `controller` extra; imported only here
        from llenergymeasure.results.report import write_report
    except ImportError as exc:
        raise fail(
            f"lem report needs matplotlib (pip install 'llenergymeasure[controller]'): {exc}"
        ) from None
    written = write_report(
        results_dir,
        out,
        baseline=baseline,
        confidence=confidence,
        n_resamples=resamples,
        seed=seed,
        method=_method(method),
        slo=parse_slo(slo) if slo else None,
    )
    for path in (written.html, *written.figures):
        typer.echo(f"wrote {path}")


def recommend(
    results_dir: Path = RESULTS_DIR,
    slo: list[str] = typer.Option(..., "--slo", help=SLO_HELP),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="Config the pick is compared with; default: the one config that leaves the GPU "
        "as it is (no gpu knob set).",
    ),
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    method: str = METHOD,
) -> None:
    """Name the config with the least J/token that meets a latency SLO, per model, backend
    and hardware, with its paired J/token ratio to the baseline config.

    A config meets the SLO when the whole CI of its latency lies within it. When fewer than
    3 cycles back the pick, or the next-cheapest config meeting the SLO cannot be told apart
    from it (paired interval includes 1), the answer says the evidence is too weak. Exits 1
    when no group has a decided answer (docs/knobs.md).

    Example: lem recommend results/sweep --slo itl_p90_ms=50
    """
    loaded = load_result_files(results_dir)
    if not loaded.results:
        raise fail(f"{results_dir}: no readable result.json found", code=1)
    answers = recommend_configs(
        loaded.results, parse_slo(slo), baseline, confidence, resamples, seed, _method(method)
    )
    for answer in answers:
        typer.echo("\n".join(recommendation_lines(answer)))
    if not any(answer.decided for answer in answers):
        raise fail("no config can be recommended with this evidence", code=1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("aggregate")(reports_errors(aggregate))
    app.command("compare")(reports_errors(compare))
    app.command("report")(reports_errors(report))
    app.command("recommend")(reports_errors(recommend))
