"""Command: `lem run` (the campaign playbook through ansible-runner, with a progress bar)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
import yaml

from llenergymeasure.commands.common import fail, reports_errors, wide_console


def _extra_vars(pairs: list[str]) -> dict[str, Any]:
    """`-e KEY=VALUE` pairs; each VALUE is read as YAML (`true`, `3`, `[a, b]`)."""
    extra: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"-e {pair!r}: expected KEY=VALUE")
        try:
            extra[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            extra[key] = value
    return extra


def run(
    campaign_file: Path = typer.Argument(..., help="The campaign file.", show_default=False),
    inventory: Path = typer.Option(..., "-i", "--inventory", help="The Ansible inventory."),
    extra: list[str] = typer.Option(
        [], "-e", "--extra-vars", help="KEY=VALUE passed to the playbook (repeatable)."
    ),
    project: Path = typer.Option(
        Path("."), "--project", help="The project directory (holds playbooks/campaign.yml)."
    ),
) -> None:
    """Run the campaign playbook through ansible-runner: a progress bar, a log, the summary.

    Runs what `ansible-playbook playbooks/campaign.yml -i INVENTORY -e
    lem_campaign_file=CAMPAIGN_FILE` runs, from the project directory. Shows a progress
    bar with the ETA and one line per experiment; the whole Ansible output goes to
    results/<campaign>/logs/run-<time>.log. Prints the summary at the end and exits
    with the playbook's exit status.

    Example: lem run campaigns/demo.yml -i inventory/local.yml
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from llenergymeasure.commands.drive import Progress as RunProgress
    from llenergymeasure.commands.drive import run_campaign
    from llenergymeasure.results.aggregate import render_table

    console = wide_console()
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "ETA",
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task("experiments", total=None)

    def show(progress: RunProgress) -> None:
        bar.update(task, total=progress.total, completed=progress.done)
        if progress.line:
            bar.console.print(progress.line, markup=False, highlight=False)

    with bar:
        outcome = run_campaign(
            campaign_file, inventory, _extra_vars(extra), project_dir=project, on_progress=show
        )
    if outcome.summary is not None:
        sys.stdout.write(render_table(outcome.summary))
    typer.echo(f"log: {outcome.log}")
    if outcome.rc != 0:
        raise fail(f"the campaign playbook ended {outcome.status} (exit {outcome.rc})", outcome.rc)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("run")(reports_errors(run))
