"""Helpers shared by the command modules."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from llenergymeasure.errors import LemError

if TYPE_CHECKING:  # rich is imported when a table is printed, not by every command
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as an error on stderr and return the Exit to raise."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def reports_errors(func: F) -> F:
    """Turn a LemError into its message on stderr and exit status 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LemError as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def wide_console(log_width: int = 200) -> Console:
    """A console as wide as the terminal, or `log_width` when output goes to a file or pipe.

    Rich would otherwise wrap tables at 80 columns in logs, cutting paths and names.
    """
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=log_width)
