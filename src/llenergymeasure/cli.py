"""The `lem` command line. Each command lives in `llenergymeasure.commands`."""

from __future__ import annotations

import typer

from llenergymeasure import __version__
from llenergymeasure.commands import campaign, health, manifest, results, runner

app = typer.Typer(
    name="lem",
    help="LLenergyMeasure: plan, run and aggregate LLM inference energy campaigns.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lem {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """LLenergyMeasure: plan, run and aggregate LLM inference energy campaigns."""


for module in (campaign, health, manifest, results, runner):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
