"""The `lem` command line. Each command lives in `llenergymeasure.commands`.

`lem experiment` runs once per experiment, as a thin client of the worker, so `main`
imports only the module of the command asked for: the other modules pull in numpy,
the plan and rich tables, a good part of the client's start-up otherwise. `app`, with
every command (for `lem --help` and for tests), is built on first access.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from typing import Any

import typer

from llenergymeasure import __version__

ALL_MODULES: tuple[str, ...] = ("campaign", "health", "manifest", "playbook", "results", "runner")
# The module of `llenergymeasure.commands` that registers each command (a unit test
# checks this against what the modules register).
COMMAND_MODULES: dict[str, str] = {
    "validate": "campaign",
    "grid": "campaign",
    "plan": "campaign",
    "health": "health",
    "baseline": "health",
    "wait-cool": "health",
    "release": "health",
    "status": "manifest",
    "aggregate": "results",
    "compare": "results",
    "run": "playbook",
    "report": "results",
    "recommend": "results",
    "experiment": "runner",
    "worker": "runner",
    "model": "runner",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lem {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """LLenergyMeasure: plan, run and aggregate LLM inference energy campaigns."""


def build_app(modules: Iterable[str] = ALL_MODULES) -> typer.Typer:
    """The `lem` app with the commands of `modules` (names in llenergymeasure.commands)."""
    app = typer.Typer(
        name="lem",
        help="LLenergyMeasure: plan, run and aggregate LLM inference energy campaigns.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for name in modules:
        importlib.import_module(f"llenergymeasure.commands.{name}").register(app)
    return app


def modules_for(argv: list[str]) -> tuple[str, ...]:
    """The command modules a command line needs: its command's, or all (help, --version)."""
    module = COMMAND_MODULES.get(argv[0]) if argv else None
    return (module,) if module else ALL_MODULES


def main() -> None:
    build_app(modules_for(sys.argv[1:]))()


def __getattr__(name: str) -> Any:
    """`llenergymeasure.cli.app`: every command, built once on first access."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = globals()["app"] = build_app()
    return app


if __name__ == "__main__":
    main()
