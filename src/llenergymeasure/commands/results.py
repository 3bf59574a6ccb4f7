"""Command: `lem aggregate` (bootstrap confidence intervals over the results of a campaign)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from llenergymeasure.commands.common import fail, reports_errors, wide_console
from llenergymeasure.results.aggregate import aggregate_directory, render_table, write_summary


def aggregate(
    results_dir: Path = typer.Argument(
        ..., help="Directory searched recursively for result.json files.", show_default=False
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Directory for summary.json, .csv and .md; defaults to RESULTS_DIR."
    ),
    confidence: float = typer.Option(
        0.95, "--confidence", min=0.5, max=0.999, help="Confidence level of the intervals."
    ),
    resamples: int = typer.Option(10_000, "--resamples", min=100, help="Bootstrap resamples."),
    seed: int = typer.Option(42, "--seed", help="Seed of the bootstrap resampling."),
) -> None:
    """Aggregate result.json files into a bootstrap CI per config, hardware and metric.

    Results are grouped by config and hardware (never pooled across GPU models);
    null metrics are left out, and a metric null in every cycle prints n/a. Writes
    summary.json, summary.csv and summary.md and prints the table. A file that
    cannot be read is reported and skipped.

    Example: lem aggregate results/demo --out results/demo
    """
    summary = aggregate_directory(
        results_dir, confidence=confidence, n_resamples=resamples, seed=seed
    )
    if not summary.rows:
        raise fail(f"{results_dir}: no readable result.json found", code=1)
    sys.stdout.write(render_table(summary, width=wide_console().width))
    for path in write_summary(summary, out or results_dir):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("aggregate")(reports_errors(aggregate))
