#!/usr/bin/python
"""Ansible module: take or release the host lock, one campaign at a time on a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_host_lock
short_description: Hold a host for one LLenergyMeasure campaign at a time
description:
  - Takes (O(state=present)) or releases (O(state=absent)) the host lock,
    C(<state_root>/host.lock), a JSON file naming its holder - campaign, controller
    hostname, C(ansible-playbook) pid and its start time, and when it was taken.
  - A lock held by another campaign fails the task with one line naming the holder,
    before anything else on the host is changed. Retry the task (C(until)) to wait.
  - A stale lock is taken over and the reason returned - the same campaign run again
    from the same controller (a re-run after a crash), a holder whose
    C(ansible-playbook) is gone (checked where the host is the controller), or a lock
    older than O(max_age_seconds).
  - Releasing empties the lock only when this run holds it.
  - Runs with the host's system Python; the logic is the C(llenergymeasure) package's
    C(lease.py), shipped as module_utils C(lem_lease) (standard library only).
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports what it would do and who holds the lock; writes nothing, never fails on a held lock.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  state_root:
    description: The host's (or lane's) state root; the lock is C(host.lock) in it.
    type: path
    required: true
  state:
    description: C(present) takes the lock, C(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  campaign:
    description: Name of the campaign that takes or releases the lock.
    type: str
    required: true
  controller:
    description:
      - The controller's run, as M(lem_plan) returns it in C(controller).
      - Keys C(controller) (hostname), C(pid), C(start_ticks).
    type: dict
    required: true
  max_age_seconds:
    description: A lock held longer than this is taken over; C(0) never by age.
    type: float
    default: 0
seealso:
  - module: lem_plan
requirements:
  - Linux (C(fcntl), C(/proc))
"""

EXAMPLES = r"""
- name: Take the host lock, waiting up to ten minutes for another campaign
  lem_host_lock:
    state_root: /var/lib/lem/state
    campaign: demo
    controller: "{{ hostvars['localhost']['lem_planned']['controller'] }}"
  register: lem_lock
  until: lem_lock is not failed
  retries: 20
  delay: 30

- name: Release it
  lem_host_lock:
    state_root: /var/lib/lem/state
    campaign: demo
    controller: "{{ hostvars['localhost']['lem_planned']['controller'] }}"
    state: absent
"""

RETURN = r"""
status:
  description:
    - C(acquired), C(taken-over) (see RV(reason)), C(already-held) by this run, C(held) by
      another campaign (check mode only; otherwise the task fails), C(released) or
      C(not-held).
  returned: always
  type: str
  sample: acquired
holder:
  description:
    - The lock's holder after the task; null when free.
    - Keys C(campaign), C(controller), C(pid), C(start_ticks), C(acquired_at).
  returned: always
  type: dict
previous:
  description: The holder found before the task; null when the lock was free.
  returned: always
  type: dict
reason:
  description: Why a stale lock was taken over; null otherwise.
  returned: always
  type: str
lock_file:
  description: The lock file.
  returned: always
  type: str
"""

from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lem_lease import (
    HOST_LOCK_NAME,
    describe_holder,
    read_host_lock,
    release_host_lock,
    take_host_lock,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "state_root": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "campaign": {"type": "str", "required": True},
    "controller": {"type": "dict", "required": True},
    "max_age_seconds": {"type": "float", "default": 0},
}


def wanted_holder(module: AnsibleModule) -> dict[str, Any]:
    controller = module.params["controller"]
    missing = [key for key in ("controller", "pid", "start_ticks") if key not in controller]
    if missing:
        module.fail_json(msg=f"controller={controller!r}: missing key(s) {', '.join(missing)}")
    return {
        "campaign": module.params["campaign"],
        "controller": controller["controller"],
        "pid": controller["pid"],
        "start_ticks": controller["start_ticks"],
    }


def release(module: AnsibleModule, path: Path, wanted: dict[str, Any]) -> None:
    holder = read_host_lock(path)
    held = holder is not None and all(holder.get(key) == value for key, value in wanted.items())
    released = held and (module.check_mode or release_host_lock(path, wanted))
    module.exit_json(
        changed=bool(released),
        status="released" if released else "not-held",
        holder=None if released else holder,
        previous=holder,
        reason=None,
        lock_file=str(path),
    )


def take(module: AnsibleModule, path: Path, wanted: dict[str, Any]) -> None:
    try:
        outcome = take_host_lock(
            path, wanted, module.params["max_age_seconds"], dry_run=module.check_mode
        )
    except OSError as exc:
        module.fail_json(
            msg=f"{path}: cannot use the host lock: {exc.strerror}", lock_file=str(path)
        )
    if outcome["status"] == "held":
        message = (
            f"{path}: this host is held by {describe_holder(outcome['holder'])}; "
            f"campaign {wanted['campaign']!r} was not started here (set lem_host_lock_wait_seconds "
            "to wait for it)"
        )
        if not module.check_mode:
            module.fail_json(msg=message, lock_file=str(path), **outcome)
        module.warn(message)
    if outcome["status"] == "taken-over":
        module.warn(
            f"{path}: took the host lock over from {describe_holder(outcome['previous'])}: "
            f"{outcome['reason']}"
        )
    module.exit_json(
        changed=outcome["status"] in ("acquired", "taken-over"), lock_file=str(path), **outcome
    )


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    path = Path(module.params["state_root"]) / HOST_LOCK_NAME
    wanted = wanted_holder(module)
    if module.params["state"] == "absent":
        release(module, path, wanted)
    take(module, path, wanted)


if __name__ == "__main__":
    main()
