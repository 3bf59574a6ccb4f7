"""One `lem_experiment` task on a host without AnsiballZ: `python -m llenergymeasure.dispatch.task`.

The `lem_experiment` action plugin (action_plugins/lem_experiment.py) checks the task's
arguments on the controller, against the module's own argument spec, and pipes them
here as JSON on stdin; this runs the attempt (`attempt.run_attempt`, as the module
does) and prints the outcome as one JSON object. A module shipped as AnsiballZ
compiles Ansible's module_utils from its zip on every task (about 0.3 s of each
experiment here, bench/bench_orchestration.py); this imports only the package's host
side. Same manifest, same locks, same outcome: only the way the call arrives changes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from llenergymeasure.dispatch.attempt import run_attempt


def expanded(params: dict[str, Any], path_keys: list[str]) -> dict[str, Any]:
    """Options of type `path` expanded on the host, as AnsibleModule does it there."""
    out = dict(params)
    for key in path_keys:
        value = out.get(key)
        if isinstance(value, str):
            out[key] = os.path.expanduser(os.path.expandvars(value))
        elif isinstance(value, list):
            out[key] = [os.path.expanduser(os.path.expandvars(v)) for v in value]
    return out


def run(request: dict[str, Any]) -> dict[str, Any]:
    """The outcome of one attempt, as the action plugin turns it into the task's result."""
    params = expanded(request["params"], request.get("path_keys", []))
    outcome = run_attempt(params, check_mode=request["check_mode"], diff=request["diff"])
    return {
        "changed": outcome.changed,
        "msg": outcome.msg,
        "warnings": list(outcome.warnings),
        "returned": outcome.returned,
    }


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    json.dump(run(request), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
