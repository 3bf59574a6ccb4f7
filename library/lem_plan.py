#!/usr/bin/python
"""Ansible module: validate a campaign and build or reuse its plan (on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_plan
short_description: Validate an LLenergyMeasure campaign and build or reuse its plan
description:
  - Validates the campaign file exactly as C(lem validate) does; an invalid campaign fails
    with the same message, naming the file, the key path and the bad value.
  - Expands the campaign into its plan (one experiment per configuration and cycle, in run
    order, assigned to O(hosts)) and writes it to the plan file (O(plan_file), or
    C(results_dir/<campaign>/plan.json)), or reuses the plan already there when neither the
    campaign nor the hosts changed. A changed campaign is reported config by config and the
    previous plan is kept beside the new one.
  - Takes the campaign's run lock, C(run.lock) beside the plan file, for the
    C(ansible-playbook) process it runs under, so that a second run of the same campaign
    fails here, naming the campaign, the lock file and the pid of the run holding it. The
    lock of a run that is no longer running (killed) is taken over and reported.
  - With O(state=released), the same module releases that lock at the end of the
    playbook that took it (C(playbooks/campaign.yml) does so in its summary play's
    C(always)); it needs only O(run_lock), the path the planning task returned. A lock
    this C(ansible-playbook) does not hold is left alone. A playbook that stops before
    (every host failed, or it was killed) leaves the lock to its pid, and the next run takes
    it over, and says so.
  - Fails, before writing anything, when no C(ansible-playbook) process is found above
    it (run over SSH, even to localhost, or by another program), as a run that cannot be
    locked is not started, so two runs never interleave; the campaign playbook runs it
    with a local connection.
  - Runs on the controller (delegated to localhost, or in a play on localhost) and needs the
    C(llenergymeasure) package on that Python interpreter.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Validates and builds the plan; writes and renames nothing, takes no run lock.
      - With O(state=released), reads the lock and says whether it would be released;
        writes nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  state:
    description:
      - C(planned) validates the campaign, takes the run lock and builds or reuses the plan.
      - C(released) releases the run lock O(run_lock) held by this C(ansible-playbook).
    type: str
    choices: [planned, released]
    default: planned
  run_lock:
    description:
      - The run lock to release (C(run_lock) of the planning task's result).
      - Required with O(state=released), and used only then.
    type: path
  campaign_file:
    description: The campaign YAML file; required with O(state=planned).
    type: path
  hosts:
    description:
      - Inventory names of the hosts (or lanes) to share the experiments between.
      - A configuration's cycles all run on one host; configurations go round-robin.
      - Required with O(state=planned).
    type: list
    elements: str
  results_dir:
    description:
      - Directory holding one subdirectory per campaign; the plan is kept in
        C(results_dir/<campaign>/plan.json), the campaign's name being read from the file.
      - With O(state=planned), exactly one of O(results_dir) and O(plan_file) is given.
    type: path
  plan_file:
    description:
      - Where the plan is kept, when not in O(results_dir).
      - With O(state=planned), exactly one of O(results_dir) and O(plan_file) is given.
    type: path
  replan:
    description:
      - Build the plan afresh even when nothing changed (the previous plan is kept beside
        it as C(plan.<n>.json)); also sets aside a plan file that no longer parses.
    type: bool
    default: false
seealso:
  - module: lem_manifest
  - module: lem_experiment
requirements:
  - llenergymeasure
"""

EXAMPLES = r"""
- name: Validate the campaign, take its run lock and plan it over the play's hosts
  lem_plan:
    campaign_file: "{{ lem_campaign_file }}"
    hosts: "{{ groups['lem_gpu_hosts'] }}"
    results_dir: "{{ lem_results_dir }}"
  register: lem_plan
  delegate_to: localhost
  run_once: true

- name: Show what changed since the previous run
  ansible.builtin.debug:
    msg: "{{ lem_plan.report }}"

# ... the plays that run the campaign ...

- name: Release the campaign's run lock
  lem_plan:
    state: released
    run_lock: "{{ lem_plan.run_lock }}"
  delegate_to: localhost
  run_once: true
  when: lem_plan.run_lock is not none
"""

RETURN = r"""
plan:
  description: The plan, as in the plan file (C(experiments) holds each experiment's entry).
  returned: success and O(state=planned)
  type: dict
report:
  description: What was done with the plan file; how the campaign differs from the last plan.
  returned: success and O(state=planned)
  type: list
  elements: str
  sample:
    - "results/demo/plan.json: campaign or hosts changed, plan updated (6 experiments)"
    - "  configs changed (config hash differs): tiny-bs4"
status:
  description: C(new), C(reused), C(updated) or C(replanned).
  returned: success and O(state=planned)
  type: str
  sample: reused
campaign_name:
  description: The campaign's name.
  returned: success and O(state=planned)
  type: str
  sample: demo
total:
  description: Number of experiments in the plan (configurations times cycles).
  returned: success and O(state=planned)
  type: int
  sample: 6
plan_file:
  description: Path of the plan file.
  returned: success and O(state=planned)
  type: str
run_lock:
  description:
    - Path of the campaign's run lock, now held by this run; null in check mode.
    - With O(state=released), the lock given.
  returned: success
  type: str
  sample: results/demo/run.lock
controller:
  description:
    - The C(ansible-playbook) running this module, as host locks record their holder
      (M(lem_host_lock)) -- keys C(controller) (hostname), C(pid), C(start_ticks); null
      without an C(ansible-playbook) above the module.
  returned: success
  type: dict
  sample: {"controller": "laptop", "pid": 4242, "start_ticks": 81234}
run_lock_status:
  description:
    - C(acquired); C(taken-over) from a run that is no longer running (said in the report);
      C(already-held) by this same run; null in check mode.
    - With O(state=released), C(released) (in check mode, would be), or C(not-held) when
      this run did not hold it (already released, or another run's).
  returned: success
  type: str
  sample: acquired
changed:
  description:
    - True when the plan file was (or, in check mode, would be) written.
    - With O(state=released), always false; the run releases the lock it took itself
      (RV(run_lock_status) says whether it did), leaving the controller as it found it.
  returned: always
  type: bool
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from llenergymeasure.controller.prepare import plan_campaign, release_campaign
    from llenergymeasure.errors import LemError
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "state": {"type": "str", "choices": ["planned", "released"], "default": "planned"},
    "run_lock": {"type": "path"},
    "campaign_file": {"type": "path"},
    "hosts": {"type": "list", "elements": "str"},
    "results_dir": {"type": "path"},
    "plan_file": {"type": "path"},
    "replan": {"type": "bool", "default": False},
}
PLAN_LOCATION = ("results_dir", "plan_file")
# Planning needs the campaign, its hosts and where the plan goes; releasing only the lock.
REQUIRED_IF: list[tuple[Any, ...]] = [
    ("state", "planned", ("campaign_file", "hosts")),
    ("state", "planned", PLAN_LOCATION, True),  # True: one of them
    ("state", "released", ("run_lock",)),
]


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[PLAN_LOCATION],
        required_if=REQUIRED_IF,
        supports_check_mode=True,
    )
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    act = release_campaign if module.params["state"] == "released" else plan_campaign
    try:
        outcome = act(module.params, dry_run=module.check_mode)
    except LemError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
