"""The gap before an experiment: a fixed sleep, or until the GPUs are cool (capped).

A thermal gap runs `lem wait-cool` in the service; where it cannot tell (no NVML, no
baseline) or fails, the gap is waited as a fixed one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llenergymeasure.dispatch.compose import Compose
from llenergymeasure.dispatch.errors import ComposeError

# `lem wait-cool` reasons meaning "cannot tell": the gap is then waited as a fixed one.
THERMAL_UNKNOWN = ("no-gpu", "no-baseline")


@dataclass(frozen=True)
class Gap:
    """The gap waited before an experiment, as the task returns it."""

    mode: str
    outcome: str
    waited_seconds: float


def wait_cool_argv(params: Mapping[str, Any]) -> list[str]:
    root = params["container_state_dir"].rstrip("/")
    return [
        "lem",
        "wait-cool",
        "--max-seconds",
        str(params["gap_seconds"]),
        "--baseline",
        f"{root}/baseline.json",
        "--temp-tolerance",
        str(params["thermal_temp_tolerance_c"]),
        "--power-tolerance-pct",
        str(params["thermal_power_tolerance_pct"]),
    ]


def wait_cool(compose: Compose, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run `lem wait-cool` in the service: its JSON answer (waited_seconds, reason, ...)."""
    stdout = compose.execute(params["service"], wait_cool_argv(params))
    return json.loads(stdout.strip().splitlines()[-1])


def wait_gap(
    compose: Compose,
    params: Mapping[str, Any],
    warn: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Gap:
    """Wait the gap before the experiment: fixed, or until the GPUs are cool (capped)."""
    seconds, mode = params["gap_seconds"], params["gap_mode"]
    if seconds <= 0:
        return Gap(mode, "none", 0.0)
    outcome = "fixed"
    if mode == "thermal":
        try:
            answer = wait_cool(compose, params)
            outcome = str(answer["reason"])
            if outcome not in THERMAL_UNKNOWN:
                return Gap(mode, outcome, float(answer["waited_seconds"]))
        except (ComposeError, ValueError, KeyError, TypeError, IndexError) as exc:
            warn(f"lem wait-cool failed ({exc}): waiting a fixed gap of {seconds} s")
            outcome = "wait-cool-failed"
    started = clock()
    sleep(seconds)
    return Gap(mode, outcome, round(clock() - started, 3))
