"""lem_experiment through its action plugin (action_plugins/lem_experiment.py) answers as
the module does through AnsiballZ: real ansible-playbook on localhost, both routes side
by side, on the paths that need no Docker (arguments refused, the plan's hash refused,
a no_log value in a message), and the host's entry point (dispatch/task.py) itself."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from fixtures.ansible import REPO, localhost_play, run_playbook

from llenergymeasure.dispatch import task

SECRET = "hunter2-not-for-logs"
VENV_BIN = str(Path(sys.executable).parent)
# Ansible's keys, which differ by route (the module's invocation has its paths expanded).
ROUTE_KEYS = {"invocation", "_ansible_no_log", "ansible_facts", "_ansible_verbose_always"}


def args(state_dir: Path, **changes: Any) -> dict[str, Any]:
    return {
        "exp_id": "demo__n__c01",
        "campaign_name": "demo",
        "host": "localhost",
        "config_name": "n",
        "cycle": 1,
        "backend": "pytorch",
        "config": {"config_name": "n", "backend": "pytorch"},
        "config_hash": "not-the-hash",
        "state_dir": str(state_dir),
        "project_name": "lem-x",
        "compose_files": [str(state_dir / "compose.yml")],
        "service": "pytorch",
        "environment": {"HF_TOKEN": SECRET},
    } | changes


def both_routes(tmp_path: Path, module_args: dict[str, Any]) -> tuple[dict, dict, str]:
    """(via the action plugin, via AnsiballZ, the whole output) of one task's arguments.

    The action plugin takes the fast route where the interpreter is a path; an
    interpreter found on PATH leaves the module to run as any module does.
    """
    task_of = {"lem_experiment": module_args, "ignore_errors": True}
    plays = [
        localhost_play([{"name": "action", **task_of}]),
        localhost_play([{"name": "module", **task_of}], interpreter="python")
        | {"environment": {"PATH": f"{VENV_BIN}:/usr/bin:/bin"}},
    ]
    run = run_playbook(tmp_path, plays)
    routes = [
        {k: v for k, v in run.task_result(name).items() if k not in ROUTE_KEYS}
        for name in ("action", "module")
    ]
    return routes[0], routes[1], run.stdout + run.stderr


def test_a_config_that_is_not_the_planned_one_fails_alike_on_both_routes(
    tmp_path: Path,
) -> None:
    action, module, _ = both_routes(tmp_path, args(tmp_path / "state"))

    assert action == module
    assert action["failed"] is True and "config_hash: 'not-the-hash'" in action["msg"]
    assert (action["exp_id"], action["status"], action["attempts"]) == (
        "demo__n__c01",
        "pending",
        0,
    )
    assert not (tmp_path / "state").exists()  # refused before anything was written


def test_arguments_outside_the_modules_spec_fail_alike_on_both_routes(tmp_path: Path) -> None:
    action, module, _ = both_routes(tmp_path, {"exp_id": "x", "not_an_option": 1})

    assert action == module
    assert action["failed"] is True and "missing required arguments" in action["msg"]


def test_a_no_log_value_is_masked_alike_on_both_routes(tmp_path: Path) -> None:
    action, module, output = both_routes(tmp_path, args(tmp_path, campaign_name=SECRET))

    assert action == module
    assert "(expected '********__n__c01')" in action["msg"]  # the exp_id names it
    assert SECRET not in output


def validated(module_args: dict[str, Any]) -> dict[str, Any]:
    """The arguments with the module spec's defaults, as the action plugin sends them."""
    spec = importlib.util.spec_from_file_location(
        "lem_experiment", REPO / "library/lem_experiment.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    checked = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(module_args)
    assert not checked.error_messages
    return checked.validated_parameters


def test_the_hosts_entry_point_answers_one_json_object_on_stdout(tmp_path: Path) -> None:
    request = {
        "params": validated(args(tmp_path / "state")) | {"state_dir": "$LEM_T/state"},
        "path_keys": ["state_dir", "compose_files"],
        "check_mode": True,
        "diff": False,
    }
    answered = subprocess.run(
        [sys.executable, "-m", "llenergymeasure.dispatch.task"],
        input=json.dumps(request, default=str),
        capture_output=True,
        text=True,
        check=True,
        env={"LEM_T": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )

    outcome = json.loads(answered.stdout)
    assert outcome["changed"] is False and "config_hash" in outcome["msg"]
    assert outcome["returned"]["exp_id"] == "demo__n__c01"


HOME = Path.home()


@pytest.mark.parametrize(
    ("value", "wanted"),
    [("~/s", str(HOME / "s")), ("$LEM_T/s", "/t/s"), (["~/a", "/b"], [str(HOME / "a"), "/b"])],
)
def test_path_options_are_expanded_on_the_host(
    value: Any, wanted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_T", "/t")

    params = task.expanded({"p": value, "other": "~/x"}, ["p"])

    assert params == {"p": wanted, "other": "~/x"}
