#!/usr/bin/python
"""Ansible module: lock GPU clocks and set the power limit through NVML, or restore them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_gpu_knobs
short_description: Apply or restore a campaign's GPU knobs (clocks, power limit) through NVML
description:
  - With O(state=applied), first restores whatever the state file O(state_file) records (a run
    killed with a knob set), then checks every asked value against the card's supported range
    (C(nvmlDeviceGetSupportedGraphicsClocks), C(nvmlDeviceGetSupportedMemoryClocks),
    C(nvmlDeviceGetPowerManagementLimitConstraints)), writes the state file atomically, and
    locks the clocks (C(nvmlDeviceSetGpuLockedClocks), C(nvmlDeviceSetMemoryLockedClocks)) and
    sets the power limit (C(nvmlDeviceSetPowerManagementLimit)); each value is read back.
  - With O(state=checked), checks every one of O(settings) against every GPU (no GPU, MIG mode,
    supported range) and changes nothing, so a campaign is refused before its first experiment.
  - With O(state=restored), undoes what the state file records (clocks reset, power limit back
    to its earlier value) and removes the file; without a state file there is nothing to do.
  - Fails naming the key, the value and the reason - out of the supported range (the range
    named), no permission (NVML_ERROR_NO_PERMISSION; setting these needs root), a GPU in MIG
    mode, a GPU that does not support the knob, or no NVIDIA GPU on the host.
  - Requires the C(llenergymeasure) package (with nvidia-ml-py) on the host's interpreter, and
    root (C(become)) on the host for the set and reset calls.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the state file and reports whether anything would change; sets nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  state:
    description:
      - C(checked) to check O(settings), C(applied) to set O(setting), C(restored) to undo any
        earlier setting.
    type: str
    choices: [checked, applied, restored]
    default: applied
  setting:
    description:
      - The config's C(gpu) section; keys C(sm_clock_mhz), C(mem_clock_mhz), C(power_limit_w),
        null leaving that knob as it is. Ignored with O(state=restored).
    type: dict
    default: {}
  settings:
    description: The distinct C(gpu) sections of the run's experiments, for O(state=checked).
    type: list
    elements: dict
    default: []
  device_ids:
    description: The lane's GPUs (NVML indices or UUIDs); all GPUs when empty.
    type: list
    elements: str
    default: []
  state_file:
    description: Where the host records what to restore (one file per lane).
    type: path
    required: true
seealso:
  - module: lem_experiment
requirements:
  - llenergymeasure
  - nvidia-ml-py
"""

EXAMPLES = r"""
- name: Restore GPU settings that a killed run left
  lem_gpu_knobs:
    state: restored
    state_file: /var/lib/lem/state/gpu-knobs-gpu01.json
  become: true

- name: Lock the SM clock at 1200 MHz for this segment
  lem_gpu_knobs:
    setting: {sm_clock_mhz: 1200, mem_clock_mhz: null, power_limit_w: null}
    device_ids: ["0"]
    state_file: /var/lib/lem/state/gpu-knobs-gpu01.json
  become: true
"""

RETURN = r"""
knobs:
  description:
    - One item per knob and GPU, keys C(knob), C(gpu_index), C(asked), C(applied) (read back
      from NVML; null when it cannot be read), C(supported_min) and C(supported_max).
  returned: always
  type: list
  elements: dict
  sample: [{"knob": "sm_clock_mhz", "gpu_index": 0, "asked": 1200, "applied": 1200.0,
            "supported_min": 345, "supported_max": 1980}]
restored:
  description: One line per knob restored from the state file before anything else.
  returned: always
  type: list
  elements: str
asked:
  description: The knobs of O(setting) that are set.
  returned: always
  type: dict
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from llenergymeasure.dispatch.knobs import knob_outcome
    from llenergymeasure.errors import LemError
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "state": {"type": "str", "choices": ["checked", "applied", "restored"], "default": "applied"},
    "setting": {"type": "dict", "default": {}},
    "settings": {"type": "list", "elements": "dict", "default": []},
    "device_ids": {"type": "list", "elements": "str", "default": []},
    "state_file": {"type": "path", "required": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    try:
        returned = knob_outcome(module.params, module.check_mode)
    except LemError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**returned)


if __name__ == "__main__":
    main()
