"""`lem` imports only the command module a command line needs (cli.COMMAND_MODULES)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from llenergymeasure import cli


def command_names(app: typer.Typer) -> set[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


@pytest.mark.parametrize("module", cli.ALL_MODULES)
def test_command_modules_names_what_each_module_registers(module: str) -> None:
    registered = command_names(cli.build_app([module]))

    assert registered == {c for c, m in cli.COMMAND_MODULES.items() if m == module}


def test_the_full_app_has_every_command() -> None:
    assert command_names(cli.app) == set(cli.COMMAND_MODULES)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["experiment", "cfg.yml", "--out", "out"], ("runner",)),
        (["wait-cool", "--max-seconds", "5"], ("health",)),
        (["--help"], cli.ALL_MODULES),
        ([], cli.ALL_MODULES),
        (["no-such-command"], cli.ALL_MODULES),  # typer then lists every command
    ],
)
def test_modules_for_a_command_line(argv: list[str], expected: tuple[str, ...]) -> None:
    assert cli.modules_for(argv) == expected


def test_lem_experiment_does_not_import_the_other_commands() -> None:
    probe = (
        "import sys\n"
        "from llenergymeasure import cli\n"
        "cli.build_app(cli.modules_for(['experiment']))\n"
        "heavy = ('numpy', 'llenergymeasure.controller.plan',"
        " 'llenergymeasure.results.aggregate')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert completed.stdout.strip() == "[]"
