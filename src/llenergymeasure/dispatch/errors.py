"""Exceptions of the dispatch layer, at the bottom: every other dispatch module may raise them."""

from __future__ import annotations

from llenergymeasure.errors import LemError

STDERR_TAIL_LINES = 20


def last_line(text: str | None) -> str:
    """The last non-blank line of a CLI's output: what the docker CLI says went wrong."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ComposeError(LemError):
    """A compose operation failed: the docker CLI's stderr and exit status."""

    def __init__(self, stderr: str | None, rc: int | None = None) -> None:
        super().__init__(last_line(stderr) or f"exit status {rc}")
        self.stderr = stderr or ""
        self.rc = rc


class ExperimentFailed(Exception):
    """The exec or its result failed: what the manifest records and the task returns."""

    def __init__(self, cause: str, rc: int | None = None, stderr: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.rc = rc
        self.stderr_tail = "\n".join(stderr.splitlines()[-STDERR_TAIL_LINES:])


class NeedsRestart(ExperimentFailed):
    """`lem experiment` exited 75: the cold start asked for needs a restart of the service."""


class TimedOut(ExperimentFailed):
    """The exec was stopped by `timeout`: the worker may still run the experiment."""
