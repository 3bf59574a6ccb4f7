#!/usr/bin/python
"""Ansible module: restart compose services within the run's restart budget on the host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_restart
short_description: Restart LLenergyMeasure services within the run's restart budget
description:
  - Restarts each of O(services) and waits until it is healthy and its fresh worker
    answers, the way C(lem_experiment) restarts a service (one implementation, in the
    C(llenergymeasure) package).
  - Each restart is counted against O(max_restarts) in C(STATE_DIR/.run-restarts.json)
    under O(run_id), the one budget of the run on this host that C(lem_experiment) counts
    in too. Once it is spent, the services left are not restarted (C(left)), with a warning.
  - Fails when a restart fails, naming the service; the restart is counted all the same.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Says which services would be restarted within the budget; restarts and writes nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  services:
    description: Compose services to restart, in this order.
    type: list
    elements: str
    required: true
  state_dir:
    description: The campaign's state directory on the host, where the budget is counted.
    type: path
    required: true
  project_name:
    description: Docker Compose project name of the host's services.
    type: str
    required: true
  compose_files:
    description: Compose files of the project.
    type: list
    elements: path
    required: true
  run_id:
    description:
      - The run's id, as given to C(lem_experiment). Unset, only this task's restarts count.
    type: str
  max_restarts:
    description: Service restarts allowed in the run on this host (C(health_check.max_restarts)).
    type: int
    default: 3
  wait_timeout:
    description: Seconds to wait for each service to be healthy again.
    type: int
    default: 600
  why:
    description: Why the services are restarted, for messages.
    type: str
    default: to free the GPU
seealso:
  - module: lem_experiment
requirements:
  - llenergymeasure
  - Docker CLI with the Compose v2 plugin
"""

EXAMPLES = r"""
- name: Restart the services that kept the GPU
  lem_restart:
    services: [vllm]
    state_dir: "{{ lem_state_dir }}"
    project_name: "{{ lem_compose_project }}"
    compose_files: ["{{ lem_state_dir }}/compose.yml"]
    run_id: "{{ lem_run_id }}"
    max_restarts: 3
"""

RETURN = r"""
restarted:
  description: The services restarted (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [vllm]
left:
  description: The services not restarted (the run's budget spent, or a restart before them failed).
  returned: always
  type: list
  elements: str
  sample: []
restarts_spent:
  description: Restarts made in the run on this host so far, this task's included.
  returned: always
  type: int
  sample: 1
"""

import traceback
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from llenergymeasure.dispatch.compose import DockerCompose
    from llenergymeasure.dispatch.errors import ExperimentFailed
    from llenergymeasure.dispatch.restarts import RestartBudget, restart_within_budget
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "services": {"type": "list", "elements": "str", "required": True},
    "state_dir": {"type": "path", "required": True},
    "project_name": {"type": "str", "required": True},
    "compose_files": {"type": "list", "elements": "path", "required": True},
    "run_id": {"type": "str"},
    "max_restarts": {"type": "int", "default": 3},
    "wait_timeout": {"type": "int", "default": 600},
    "why": {"type": "str", "default": "to free the GPU"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    p = module.params
    if p["max_restarts"] < 0:
        module.fail_json(msg=f"max_restarts: {p['max_restarts']} is less than the minimum 0")
    budget = RestartBudget(Path(p["state_dir"]), p["run_id"], p["max_restarts"])
    if module.check_mode:
        room = max(p["max_restarts"] - budget.spent(), 0)
        module.exit_json(
            changed=room > 0 and bool(p["services"]),
            restarted=p["services"][:room],
            left=p["services"][room:],
            restarts_spent=budget.spent(),
        )
    compose = DockerCompose(p["compose_files"], p["project_name"])
    try:
        restarted, left = restart_within_budget(
            compose, p["services"], budget, p["wait_timeout"], p["why"]
        )
    except ExperimentFailed as exc:
        done = p["services"][: budget.made - 1]  # the last one counted is the one that failed
        left = p["services"][budget.made :]
        module.fail_json(
            msg=exc.cause, changed=True, restarted=done, left=left, restarts_spent=budget.spent()
        )
    if left:
        module.warn(
            f"{', '.join(left)} not restarted {p['why']}: health_check.max_restarts "
            f"({p['max_restarts']}) restarts were made in this run already"
        )
    module.exit_json(
        changed=bool(restarted), restarted=restarted, left=left, restarts_spent=budget.spent()
    )


if __name__ == "__main__":
    main()
