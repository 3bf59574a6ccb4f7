"""Action plugin for lem_experiment: the same module, run without AnsiballZ on the host.

A module shipped as AnsiballZ compiles Ansible's module_utils from its zip on every
task: about 0.3 s of every experiment (bench/bench_orchestration.py), more than the
whole rest of the module. Where the task's interpreter is a known path (the host's
venv: roles/lem_host sets ansible_python_interpreter), this plugin checks the
arguments here, on the controller, against the module's own spec
(library/lem_experiment.py: one spec, one documentation), and runs
`python -m llenergymeasure.dispatch.task` on the host with them as JSON on stdin: one
command through the task's connection, local or SSH. The host runs the attempt exactly
as the module does (`dispatch.attempt.run_attempt`: same manifest, locks and outcome).
Anywhere else (an interpreter left to discovery, or become) the module runs as any
module does.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shlex
from types import ModuleType
from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

MODULE = "lem_experiment"
REMOTE_ENTRY = "llenergymeasure.dispatch.task"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        interpreter = self._known_interpreter(task_vars)
        # become (never asked for by the roles) is left to Ansible's own module route
        if interpreter is None or self._connection.become:
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result
        spec = module_spec(self._module_path())
        # `path` options are checked as strings here and expanded on the host, where
        # `~` and `$VAR` mean what AnsibleModule would make of them.
        as_str = {k: v | {"type": "str"} if v.get("type") == "path" else v for k, v in spec.items()}
        checked = ArgumentSpecValidator(as_str).validate(dict(self._task.args))
        if checked.error_messages:
            result.update(failed=True, msg=checked.errors.msg)
            return result
        request = {
            "params": checked.validated_parameters,
            "path_keys": [k for k, v in spec.items() if v.get("type") == "path"],
            "check_mode": bool(self._play_context.check_mode),
            "diff": bool(self._play_context.diff),
        }
        result.update(self._run_on_host(interpreter, request))
        result["invocation"] = {"module_args": request["params"]}  # as AnsibleModule gives it
        # as AnsibleModule does: no value of a no_log option (environment) in the result
        return remove_values(result, checked._no_log_values)

    def _known_interpreter(self, task_vars: dict[str, Any]) -> str | None:
        """The task's Python when it is a path (not `auto`, left to discovery), else None."""
        raw = task_vars.get("ansible_python_interpreter")
        if raw is None:
            return None
        interpreter = str(self._templar.template(raw))
        return interpreter if interpreter.startswith("/") else None

    def _module_path(self) -> str:
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(MODULE)
        return str(found.plugin_resolved_path)

    def _run_on_host(self, interpreter: str, request: dict[str, Any]) -> dict[str, Any]:
        env = self._compute_environment_string()
        command = f"{shlex.quote(interpreter)} -m {REMOTE_ENTRY}"
        res = self._low_level_execute_command(
            f"{env} {command}".strip(), sudoable=False, in_data=json.dumps(request).encode()
        )
        try:
            answer = json.loads(res.get("stdout") or "")
        except ValueError:
            return self._host_failure(interpreter, res)
        fields: dict[str, Any] = dict(answer["returned"])
        fields["changed"] = answer["changed"]
        if answer["warnings"]:
            fields["warnings"] = answer["warnings"]
        if answer["msg"] is not None:
            fields.update(failed=True, msg=answer["msg"])
        return fields

    def _host_failure(self, interpreter: str, res: dict[str, Any]) -> dict[str, Any]:
        """No outcome came back: the package missing on the host, or the entry crashed."""
        stderr = res.get("stderr") or ""
        if "No module named 'llenergymeasure" in stderr:
            msg = (
                "Failed to import the required Python library (llenergymeasure) on the "
                f"host's Python {interpreter}: point ansible_python_interpreter at the "
                "host's venv (roles/lem_host)"
            )
        else:
            msg = f"{interpreter} -m {REMOTE_ENTRY} gave no outcome (exit {res.get('rc')})"
        return {
            "failed": True,
            "msg": msg,
            "module_stderr": stderr,
            "module_stdout": res.get("stdout") or "",
        }


@functools.cache
def module_spec(path: str) -> dict[str, Any]:
    """The ARGUMENT_SPEC of library/lem_experiment.py, loaded once per process."""
    return _load(path).ARGUMENT_SPEC


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_lem_action_{MODULE}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
