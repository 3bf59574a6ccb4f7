"""The run's restart budget, and the health check that may spend it.

`health_check.max_restarts` bounds the service restarts of a whole run. The role passes
the restarts made before an experiment loop (hand-overs, earlier segments); those the
loop's own tasks make are counted in STATE_DIR/.loop-restarts.json under the loop's id,
since one task of a loop cannot see what the loop's earlier tasks returned.

The health check is `lem health --json` in the service: it fails when the exec does not
answer (the service is down or broken) or when a GPU's memory that the service's own
worker does not hold is above the threshold (a leak, a sibling's leftover).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.dispatch.compose import Compose
from llenergymeasure.dispatch.errors import last_line
from llenergymeasure.files import atomic_write_text

LEDGER = ".loop-restarts.json"  # in state_dir
HEALTH_EXEC_TIMEOUT = 120  # bounds a docker CLI that hangs; `lem health` takes a second


@dataclass
class RestartBudget:
    """Restarts left to this run; `loop_id` None: this task's restarts are counted alone."""

    state_dir: Path
    loop_id: str | None
    done_before: int
    limit: int
    made: int = 0  # by this task

    def _ledger(self) -> int:
        try:
            data = json.loads((self.state_dir / LEDGER).read_text(encoding="utf-8"))
            return int(data["restarts"]) if data["loop_id"] == self.loop_id else 0
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def spent(self) -> int:
        # max: a ledger that could not be written still holds this task's own restarts
        loop = max(self._ledger(), self.made) if self.loop_id else self.made
        return self.done_before + loop

    def allowed(self) -> bool:
        return self.spent() < self.limit

    def record(self) -> None:
        if self.loop_id:
            count = self._ledger() + 1
            body = json.dumps({"loop_id": self.loop_id, "restarts": count}) + "\n"
            # A ledger that cannot be written only lets the loop's next tasks restart
            # more: never worth losing the experiment's own record over.
            with contextlib.suppress(OSError):
                atomic_write_text(self.state_dir / LEDGER, body)
        self.made += 1


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
