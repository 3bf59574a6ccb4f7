#!/usr/bin/python
"""Ansible module: split a host's share of the plan into pending and completed, read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_manifest
short_description: Read a host's LLenergyMeasure manifest once and say what is left to run
description:
  - Reads the host's manifest (C(STATE_DIR/manifest.json)) once and applies the resume rule
    of the C(llenergymeasure) package to each experiment of the host's share of the plan.
  - Returns the experiments that must run (new, interrupted, failed and retried, config
    changed, or completed but with their result file gone), in plan order, and the
    identity and headline metrics of those completed with the same config hash, so that a
    re-run loops only over what is left and the progress counts every experiment.
  - Read-only; never changes anything (C(changed=false)). A manifest that does not parse
    fails the task with a message naming the file, which is left as it is.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads only, so it runs unchanged in check mode.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  state_dir:
    description: The campaign's state directory on the host (C(manifest.json), C(results/)).
    type: path
    required: true
  campaign_name:
    description: Name of the campaign; a manifest of another campaign is refused.
    type: str
    required: true
  host:
    description: Inventory name of the host or lane; a manifest of another host is refused.
    type: str
    required: true
  experiments:
    description: This host's share of the plan, in plan order, entries as in C(plan.json).
    type: list
    elements: dict
    required: true
  retry_failed:
    description: Count an experiment recorded as C(failed) as pending (it runs again).
    type: bool
    default: true
seealso:
  - module: lem_plan
  - module: lem_experiment
requirements:
  - llenergymeasure
"""

EXAMPLES = r"""
- name: Find what is left of this host's share
  lem_manifest:
    state_dir: "{{ lem_state_dir }}"
    campaign_name: "{{ lem_plan.campaign_name }}"
    host: "{{ inventory_hostname }}"
    experiments: "{{ lem_plan.plan | lem_host_share(inventory_hostname) }}"
    retry_failed: "{{ lem_plan.plan.failures.retry_failed_on_resume }}"
  register: lem_left

- name: Run only what is pending
  ansible.builtin.include_tasks: experiment.yml
  loop: "{{ lem_left.pending | lem_with_gaps(60, 300) }}"
"""

RETURN = r"""
pending:
  description:
    - The plan entries that must run, in plan order, each with C(reason) and C(detail).
    - C(reason) is the manifest's resume rule (C(new), C(interrupted), C(failed-retry),
      C(config-changed)), or C(result-missing) for a completed experiment whose result
      file cannot be read.
  returned: always
  type: list
  elements: dict
completed:
  description:
    - One item per experiment completed with the plan's config hash.
    - Keys C(exp_id), C(config_name), C(cycle), C(host) and C(metrics) (headline
      numbers); never the result itself, which reaches the controller as a file.
  returned: always
  type: list
  elements: dict
failed_kept:
  description:
    - Experiments that failed before and are kept failed (O(retry_failed=false)).
    - Keys C(exp_id), C(config_name), C(cycle), C(host), C(attempts), C(error).
  returned: always
  type: list
  elements: dict
counts:
  description: Number of experiments C(total), C(completed), C(pending) and C(failed) (kept).
  returned: always
  type: dict
  sample: {"total": 6, "completed": 4, "pending": 2, "failed": 0}
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from llenergymeasure.dispatch.share import share_status
    from llenergymeasure.errors import LemError
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "state_dir": {"type": "path", "required": True},
    "campaign_name": {"type": "str", "required": True},
    "host": {"type": "str", "required": True},
    "experiments": {"type": "list", "elements": "dict", "required": True},
    "retry_failed": {"type": "bool", "default": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    try:
        returned = share_status(module.params)
    except LemError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **returned)


if __name__ == "__main__":
    main()
