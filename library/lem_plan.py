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
    order, assigned to O(hosts)) and writes it to O(plan_file), or reuses the plan already
    there when neither the campaign nor the hosts changed. A changed campaign is reported
    config by config and the previous plan is kept beside the new one.
  - Runs on the controller (delegated to localhost, or in a play on localhost) and needs the
    C(llenergymeasure) package on that Python interpreter.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Validates and builds the plan; writes and renames nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  campaign_file:
    description: The campaign YAML file.
    type: path
    required: true
  hosts:
    description:
      - Inventory names of the hosts (or lanes) to share the experiments between.
      - A configuration's cycles all run on one host; configurations go round-robin.
    type: list
    elements: str
    required: true
  plan_file:
    description: Where the plan is kept, usually C(results/<campaign>/plan.json).
    type: path
    required: true
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
- name: Validate the campaign and plan it over the play's hosts
  lem_plan:
    campaign_file: "{{ lem_campaign_file }}"
    hosts: "{{ groups['lem_gpu_hosts'] }}"
    plan_file: "{{ lem_results_dir }}/{{ lem_campaign_name }}/plan.json"
  register: lem_plan
  delegate_to: localhost
  run_once: true

- name: Show what changed since the previous run
  ansible.builtin.debug:
    msg: "{{ lem_plan.report }}"
"""

RETURN = r"""
plan:
  description: The plan, as in the plan file (C(experiments) holds each experiment's entry).
  returned: success
  type: dict
report:
  description: What was done with the plan file; how the campaign differs from the last plan.
  returned: success
  type: list
  elements: str
  sample:
    - "results/demo/plan.json: campaign or hosts changed, plan updated (6 experiments)"
    - "  configs changed (config hash differs): tiny-bs4"
status:
  description: C(new), C(reused), C(updated) or C(replanned).
  returned: success
  type: str
  sample: reused
campaign_name:
  description: The campaign's name.
  returned: success
  type: str
  sample: demo
total:
  description: Number of experiments in the plan (configurations times cycles).
  returned: success
  type: int
  sample: 6
plan_file:
  description: Path of the plan file.
  returned: success
  type: str
changed:
  description: True when the plan file was (or, in check mode, would be) written.
  returned: always
  type: bool
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from llenergymeasure.campaign.plan import plan_or_reuse
    from llenergymeasure.config.loader import load_campaign
    from llenergymeasure.errors import LemError
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "campaign_file": {"type": "path", "required": True},
    "hosts": {"type": "list", "elements": "str", "required": True},
    "plan_file": {"type": "path", "required": True},
    "replan": {"type": "bool", "default": False},
}


def plan_campaign(params: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """Validate, then build or reuse the plan: the module's return values."""
    loaded = load_campaign(params["campaign_file"])
    plan, report = plan_or_reuse(
        loaded, params["hosts"], params["plan_file"], replan=params["replan"], dry_run=dry_run
    )
    return {
        "changed": report.status != "reused",
        "plan": plan.model_dump(mode="json"),
        "report": report.lines(),
        "status": report.status,
        "campaign_name": plan.campaign_name,
        "total": len(plan.experiments),
        "plan_file": params["plan_file"],
    }


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    try:
        outcome = plan_campaign(module.params, dry_run=module.check_mode)
    except LemError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
