"""Earlier attempts of an experiment that outlived the controller which started them.

When `ansible-playbook` is killed, the `lem experiment` it exec'd in the backend's
container keeps running (a `docker exec` process does not die with its client), and
it will write `results/<exp_id>/result.json` when it ends. Before an interrupted
experiment runs again, the orchestration waits for such a process to end, so that
two attempts never measure at once and the older one cannot write into the newer
one's results directory. The manifest side of the same guarantee is
`manifest.replace_entry`. See docs/reliability.md ("The controller is killed").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise

from llenergymeasure.errors import LemError

EXP_ID_OPTION = "--exp-id"


class AttemptLookupFailed(LemError):
    """The service's processes could not be listed: an earlier attempt may still run."""


def _runs_experiment(command: list[str], exp_id: str) -> bool:
    """Whether a command line (split on spaces) carries `--exp-id EXP_ID`."""
    return f"{EXP_ID_OPTION}={exp_id}" in command or (EXP_ID_OPTION, exp_id) in pairwise(command)


def attempt_pids(top_output: str, exp_id: str) -> list[int]:
    """Host pids of the processes running `exp_id` in `docker compose top` output.

    The output is one or more tables whose header names the PID and CMD columns;
    columns before CMD hold no spaces. `exp_id` is a safe name (no spaces), so the
    command's `--exp-id` option is found among the space-separated words.
    """
    pids: list[int] = []
    pid_column = cmd_column = None
    for line in top_output.splitlines():
        fields = line.split()
        if "PID" in fields and "CMD" in fields:
            pid_column, cmd_column = fields.index("PID"), fields.index("CMD")
            continue
        if pid_column is None or cmd_column is None or len(fields) <= cmd_column:
            continue
        if _runs_experiment(fields[cmd_column:], exp_id) and fields[pid_column].isdigit():
            pids.append(int(fields[pid_column]))
    return pids


def attempt_pids_from_top(returncode: int, stdout: str, stderr: str, exp_id: str) -> list[int]:
    """`attempt_pids` of a `docker compose top SERVICE` run, which failed or not.

    Compose answers 0 with no table for a service that is not running; any other
    status (a daemon that does not answer) says nothing about the earlier attempt, so
    it is a failure, never "none runs": measuring beside a survivor would share the GPU.
    """
    if returncode != 0:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else f"exit status {returncode}"
        raise AttemptLookupFailed(
            f"cannot tell whether an earlier attempt of {exp_id} still runs "
            f"(docker compose top failed: {reason}): not started; run the campaign again"
        )
    return attempt_pids(stdout.strip(), exp_id)


def wait_for_attempts_to_end(
    probe: Callable[[], list[int]],
    limit_seconds: float,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Poll `probe` (pids of earlier attempts) until it finds none or `limit_seconds` pass.

    Returns the pids still running at the limit: empty when the earlier attempts ended.
    """
    deadline = clock() + limit_seconds
    while True:
        pids = probe()
        if not pids or clock() >= deadline:
            return pids
        sleep(min(poll_seconds, max(deadline - clock(), 0.0)))
