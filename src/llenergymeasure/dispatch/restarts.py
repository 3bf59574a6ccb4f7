"""The run's restart budget, and the health check that may spend it.

`health_check.max_restarts` bounds the service restarts of a whole run on one host.
Every restart of the run (an experiment's, a GPU hand-over's) is counted on the host,
in STATE_DIR/.run-restarts.json under the run's id: one count, whichever task, loop or
segment made it, since no task can see what the others returned.

The health check is `lem health --json` in the service: it fails when the exec does not
answer (the service is down or broken) or when a GPU's memory that the service's own
worker does not hold is above the threshold (a leak, a sibling's leftover).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.dispatch.compose import Compose, restart_service
from llenergymeasure.dispatch.errors import last_line
from llenergymeasure.files import atomic_write_text

LEDGER = ".run-restarts.json"  # in state_dir
HEALTH_EXEC_TIMEOUT = 120  # bounds a docker CLI that hangs; `lem health` takes a second


@dataclass
class RestartBudget:
    """Restarts left to this run on this host; `run_id` None: this task's counted alone."""

    state_dir: Path
    run_id: str | None
    limit: int
    made: int = 0  # by this task

    def _ledger(self) -> int:
        try:
            data = json.loads((self.state_dir / LEDGER).read_text(encoding="utf-8"))
            return int(data["restarts"]) if data["run_id"] == self.run_id else 0
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def spent(self) -> int:
        # max: a ledger that could not be written still holds this task's own restarts
        return max(self._ledger(), self.made) if self.run_id else self.made

    def allowed(self) -> bool:
        return self.spent() < self.limit

    def record(self) -> None:
        if self.run_id:
            count = self._ledger() + 1
            body = json.dumps({"run_id": self.run_id, "restarts": count}) + "\n"
            # A ledger that cannot be written only lets the run's next tasks restart
            # more: never worth losing the experiment's own record over.
            with contextlib.suppress(OSError):
                atomic_write_text(self.state_dir / LEDGER, body)
        self.made += 1


def restart_counted(
    compose: Compose, service: str, budget: RestartBudget, wait_timeout: int, why: str
) -> None:
    """The one way a service is restarted: counted first (also when it fails: the
    service was restarted), then restarted until its fresh worker answers."""
    budget.record()
    restart_service(compose, service, wait_timeout, why)


def restart_within_budget(
    compose: Compose,
    services: Sequence[str],
    budget: RestartBudget,
    wait_timeout: int,
    why: str,
) -> tuple[list[str], list[str]]:
    """Restart each service while the budget allows: (restarted, left as they are).

    ExperimentFailed (its cause) when a restart fails.
    """
    restarted: list[str] = []
    left = list(services)
    while left and budget.allowed():
        service = left.pop(0)
        restart_counted(compose, service, budget, wait_timeout, why)
        restarted.append(service)
    return restarted, left


def health_problem(compose: Compose, service: str, threshold_pct: float) -> str | None:
    """Why the service needs a restart, from `lem health --json` in it; None when healthy."""
    argv = ["exec", "--no-TTY", service, "lem", "health", "--json"]
    try:
        probe = compose.cli(argv, timeout=HEALTH_EXEC_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`lem health` could not run: {exc}"
    if probe.rc != 0:
        return f"`lem health` failed: {last_line(probe.stderr) or f'exit status {probe.rc}'}"
    try:
        gpus = json.loads(probe.stdout)["gpus"]
        outside = {gpu["index"]: gpu["memory_outside_worker_pct"] for gpu in gpus}
    except (ValueError, KeyError, TypeError):
        return f"`lem health` answered no report: {last_line(probe.stdout)!r}"
    over = [
        f"GPU {index}: {pct:.0f} % of its memory held outside the worker"
        for index, pct in outside.items()
        if isinstance(pct, int | float) and pct > threshold_pct
    ]
    return f"{'; '.join(over)} (threshold {threshold_pct:g} %)" if over else None
