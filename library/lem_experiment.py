#!/usr/bin/python
"""Ansible module: run one experiment of a campaign in a running compose service."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_experiment
short_description: Run one LLenergyMeasure experiment in a running compose service
description:
  - Runs C(lem experiment) inside the backend's running Docker Compose service through
    C(docker compose exec) (an argv list, no TTY), reads the C(result.json)
    it writes on the shared state volume, and records the experiment in the host's
    manifest (C(STATE_DIR/manifest.json)) through the C(llenergymeasure) package.
  - Idempotent. An experiment already C(completed) with the same config hash is not run
    again; its headline metrics are returned with C(changed=false).
  - An experiment found C(running) was interrupted; its partial output is moved aside
    and it runs again. A C(failed) one runs again when O(retry_failed) is true.
  - Before an interrupted experiment runs again, the module waits until no process of the
    service still runs it (a C(lem experiment) left by a controller that was killed; at
    most O(timeout) seconds and the grace period), then reads the manifest again. When
    the service's processes cannot be listed (C(docker compose top) fails), the task
    fails and the experiment is not started. Each
    manifest update is made only while the entry is still the one this attempt read, so
    an older attempt never overwrites a newer one's entry.
  - The service's main process is C(lem worker), which keeps the model loaded between
    experiments sharing a load key; the exec is a thin client, run with
    C(--require-worker), so that the experiment fails when no worker answers instead of
    running cold in the exec's own process. With O(cold_start) the
    worker loads the model from scratch; when only a restart of the service can give that
    cold start (exit 75), the module restarts the service, waits until it is healthy and
    runs the experiment again, once (see docs/worker.md).
  - Returns a compact record (identity, status, headline metrics, the result file's
    path), never the result's content or samples; the result files travel to the
    controller as files (C(roles/lem_host/tasks/results.yml)).
  - Requires the C(llenergymeasure) package on the host's Python interpreter (its host
    side, with no pydantic and no Docker client library), and the Docker CLI with the Compose v2
    plugin.
  - Where C(ansible_python_interpreter) is a path (as C(roles/lem_host) sets it to the
    host's venv), its action plugin (C(action_plugins/lem_experiment.py)) checks the
    arguments on the controller against this module's spec and runs
    C(python -m llenergymeasure.dispatch.task) on the host with them on stdin, instead of
    shipping the module as AnsiballZ (whose module_utils are compiled again on every task);
    the attempt, the manifest and the return values are the same here and there.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the experiment would run and why; executes and writes nothing.
  diff_mode:
    support: full
    details: The manifest entry before and after.
  platform:
    support: full
    platforms: posix
options:
  exp_id:
    description: Experiment id from the plan (C(CAMPAIGN__CONFIG__cNN)).
    type: str
    required: true
  campaign_name:
    description: Name of the campaign.
    type: str
    required: true
  host:
    description: Inventory name of the host or lane running the experiment.
    type: str
    required: true
  config_name:
    description: Name of the experiment's configuration.
    type: str
    required: true
  cycle:
    description: Cycle number of this run of the configuration (from 1).
    type: int
    required: true
  backend:
    description: Backend of the configuration (C(pytorch), C(vllm), C(tensorrt)).
    type: str
    required: true
  config:
    description: The fully resolved experiment configuration, as in the plan.
    type: dict
    required: true
  config_hash:
    description: Hash of O(config) from the plan; must match the configuration given.
    type: str
    required: true
  state_dir:
    description:
      - The campaign's state directory on the host, mounted in the service at
        O(container_state_dir). Holds C(manifest.json), C(configs/) and C(results/).
    type: path
    required: true
  container_state_dir:
    description: Where O(state_dir) is mounted inside the service's container.
    type: str
    default: /lem/state
  project_name:
    description: Docker Compose project name of the host's services.
    type: str
    required: true
  compose_files:
    description: Compose files of the project.
    type: list
    elements: path
    required: true
  service:
    description: Compose service to run the experiment in; must exist in O(compose_files).
    type: str
    required: true
  retry_failed:
    description: Run an experiment recorded as C(failed) again.
    type: bool
    default: true
  gap_seconds:
    description:
      - Seconds to wait before the experiment, so the GPU cools down between runs; with
        O(gap_mode=thermal), the most to wait.
      - Only waited when the experiment will actually run, and never in check mode.
      - The time actually waited is passed to C(lem experiment --gap-waited) and recorded
        in the result (C(timing.gap_waited_seconds)).
    type: float
    default: 0
  gap_mode:
    description:
      - C(fixed) sleeps O(gap_seconds).
      - C(thermal) runs C(lem wait-cool) in the service, which returns once every GPU is
        back within the tolerances of its idle temperature and power (from
        C(baseline.json) in the state directory), at most O(gap_seconds) later. Where it
        cannot tell (no NVML, no baseline) the gap is waited as C(fixed).
    type: str
    choices: [fixed, thermal]
    default: fixed
  thermal_temp_tolerance_c:
    description: With O(gap_mode=thermal), degrees Celsius above idle that count as cool.
    type: float
    default: 2.0
  thermal_power_tolerance_pct:
    description: With O(gap_mode=thermal), percent above idle power that counts as cool.
    type: float
    default: 10.0
  gpu_knobs:
    description:
      - The GPU knobs C(lem_gpu_knobs) set for this experiment (its C(knobs) return), passed
        to C(lem experiment --gpu-knobs) and recorded in the result's C(gpu_knobs).
    type: list
    elements: dict
    default: []
  cold_start:
    description:
      - Load the model from scratch for this experiment (C(lem experiment --cold-start))
        instead of reusing the one the service's worker holds.
    type: bool
    default: false
  max_restarts:
    description:
      - Service restarts allowed in the whole run (C(health_check.max_restarts)). The
        service is restarted when the worker answers that only a restart gives the cold
        start asked for (exit 75), when its worker is frozen or does not stop an experiment
        past O(timeout), and when a health check fails (O(health_check_before),
        O(health_check_after_failure)). Once they are spent, the experiment is recorded
        failed without the restart, or runs as it is, with a warning.
    type: int
    default: 3
  run_id:
    description:
      - The run's id, unique to the run. Every restart of the run on this host (each
        experiment's, and the GPU hand-overs' of M(lem_restart)) is counted under it in
        C(STATE_DIR/.run-restarts.json), against O(max_restarts), since no task can see
        what the others returned.
      - Unset, this task's restarts are counted alone.
    type: str
  health_check_before:
    description:
      - Run C(lem health --json) in the service before the experiment, and restart the
        service when the check fails (the exec does not answer) or a GPU's memory that the
        service's worker does not hold is above O(gpu_memory_threshold_pct).
      - Only when the experiment will run, before its gap and before its entry is marked
        C(running), and never in check mode. When that restart fails, the task fails and
        the experiment is left as it was (a re-run runs it).
    type: bool
    default: false
  health_check_after_failure:
    description:
      - The same check after a failed experiment (a failure may mean that the service
        itself died), unless this task restarted the service already; a healthy service
        is left as it is.
    type: bool
    default: true
  gpu_memory_threshold_pct:
    description: Percent of a GPU's memory held outside the service's worker that fails the check.
    type: float
    default: 90.0
  wait_timeout:
    description: Seconds to wait for the service to be healthy again after a restart.
    type: int
    default: 600
  timeout:
    description:
      - Seconds the experiment may take; it is then recorded failed, C(timed out after N s).
      - The exec (a thin client) is stopped by C(timeout) from coreutils, and the worker is
        asked to stop the experiment (C(lem worker --status --cancel)); it stops at its next
        stage. When the worker does not answer within seconds (frozen), or has not stopped
        it after a grace period, the service is restarted (within O(max_restarts)), so that
        the next experiments find a worker that serves them (see docs/reliability.md).
    type: int
  cancel_grace:
    description:
      - After a timeout, seconds the worker may take to leave the experiment (it stops
        between stages) before the service is restarted.
    type: float
    default: 30.0
  environment:
    description:
      - Extra environment variables for the experiment process (for example C(HF_TOKEN)).
      - Values never appear in any command line, the manifest, the result or the output;
        only the variable names are passed to C(docker compose exec).
    type: dict
    default: {}
notes:
  - The experiment's command line is an argument list, never a shell string, so values
    of the configuration are carried as data.
  - The services of O(compose_files) are read with C(docker compose config) once and kept
    in C(STATE_DIR/.compose-services.json), keyed by the files' paths, sizes and
    modification times, so that each experiment does not pay for it again.
seealso:
  - module: lem_manifest
  - module: lem_plan
  - module: lem_restart
requirements:
  - llenergymeasure
  - Docker CLI with the Compose v2 plugin
"""

EXAMPLES = r"""
- name: Run each pending experiment
  lem_experiment:
    exp_id: "{{ item.exp_id }}"
    campaign_name: "{{ lem_plan.campaign_name }}"
    host: "{{ inventory_hostname }}"
    config_name: "{{ item.config_name }}"
    cycle: "{{ item.cycle }}"
    backend: "{{ item.backend }}"
    config: "{{ item.config }}"
    config_hash: "{{ item.config_hash }}"
    state_dir: "{{ lem_state_dir }}"
    project_name: "{{ lem_compose_project }}"
    compose_files: ["{{ lem_state_dir }}/compose.yml"]
    service: "{{ item.backend }}"
    gap_seconds: "{{ item.gap_seconds }}"
    # the run's restarts on this host counted together, against max_restarts (3 by default)
    run_id: "{{ lem_run_id }}"
    environment:
      HF_TOKEN: "{{ lem_hf_token | default(omit) }}"
  loop: "{{ lem_pending | lem_with_gaps(60, 300) }}"
  loop_control:
    label: "{{ item.exp_id }}"
  register: lem_runs
  failed_when: false
"""

RETURN = r"""
exp_id:
  description: The experiment id.
  returned: always
  type: str
  sample: demo__tiny-bs1__c02
config_name:
  description: Name of the experiment's configuration, as given.
  returned: always
  type: str
  sample: tiny-bs1
cycle:
  description: Cycle number of the run, as given.
  returned: always
  type: int
  sample: 2
host:
  description: Host or lane running the experiment, as given.
  returned: always
  type: str
  sample: localhost
status:
  description:
    - Manifest status after the task, C(completed) or C(failed).
    - C(pending) in check mode when the experiment would run.
    - When the task failed before the experiment started, the status of its manifest
      entry as found (C(pending) when it has none).
    - C(running) when the task failed after marking the entry running (a partial start,
      with C(changed=true)); the next run runs it again.
  returned: always
  type: str
  sample: completed
detail:
  description: The resume decision as a sentence; empty when the task failed before it.
  returned: always
  type: str
  sample: not run yet
reason:
  description:
    - Why it ran or not, from the manifest's resume rule
      (C(new), C(completed), C(interrupted), C(failed-retry), C(failed-kept), C(config-changed)),
      or C(result-missing) for a completed experiment whose result file is gone (it runs again).
    - Empty when the task failed before the decision (an invalid argument or manifest).
  returned: always
  type: str
  sample: new
attempts:
  description: Number of attempts recorded in the manifest.
  returned: always
  type: int
  sample: 1
result_path:
  description: Path of C(result.json) relative to O(state_dir).
  returned: when status is completed
  type: str
  sample: results/demo__tiny-bs1__c02/result.json
metrics:
  description:
    - Headline numbers of the result (energy, J per token, throughput, latency, load time).
    - Null where the host could not measure them.
  returned: when status is completed
  type: dict
  sample: {"energy_j": 41.2, "output_tokens_per_s": 1520.3, "j_per_output_token": 0.027}
error:
  description: The recorded error of a failed experiment (empty when none was recorded).
  returned: when status is failed
  type: str
rc:
  description:
    - Exit status of C(lem experiment) (124 when stopped by O(timeout); 0 when it exited 0
      but its result is unusable).
  returned: when the experiment ran and failed, unless the docker CLI could not run
  type: int
  sample: 1
stderr_tail:
  description: Last lines of the experiment's stderr.
  returned: when the experiment ran and failed
  type: str
service_restarts:
  description:
    - Service restarts this task made (for a cold start, a frozen or timed-out worker, a
      failed health check), a failed one included; they are counted in the run's budget
      on the host (O(run_id)).
  returned: when the experiment ran, or its service was checked before it (O(health_check_before))
  type: int
  sample: 0
health:
  description: The health checks made (O(health_check_before), O(health_check_after_failure)).
  returned: when the experiment ran, or its service was checked before it (O(health_check_before))
  type: list
  elements: dict
  contains:
    when:
      description: C(before the experiment) or C(after the failure).
      type: str
    problem:
      description: Why the service failed the check; null when it passed.
      type: str
    restarted:
      description: Whether the service was restarted for it.
      type: bool
  sample: [{"when": "after the failure", "problem": "`lem health` failed", "restarted": true}]
gap:
  description: The gap waited before the experiment.
  returned: when the experiment ran
  type: dict
  contains:
    mode:
      description: C(fixed) or C(thermal), as asked.
      type: str
    outcome:
      description:
        - C(none) (no gap), C(fixed), or what C(lem wait-cool) answered (C(cool), C(cap));
          C(no-gpu), C(no-baseline) or C(wait-cool-failed) when a thermal gap was waited
          as fixed instead.
      type: str
    waited_seconds:
      description: Seconds actually waited.
      type: float
  sample: {"mode": "thermal", "outcome": "cool", "waited_seconds": 41.0}
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from llenergymeasure.dispatch.attempt import run_attempt
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "exp_id": {"type": "str", "required": True},
    "campaign_name": {"type": "str", "required": True},
    "host": {"type": "str", "required": True},
    "config_name": {"type": "str", "required": True},
    "cycle": {"type": "int", "required": True},
    "backend": {"type": "str", "required": True},
    "config": {"type": "dict", "required": True},
    "config_hash": {"type": "str", "required": True},
    "state_dir": {"type": "path", "required": True},
    "container_state_dir": {"type": "str", "default": "/lem/state"},
    "project_name": {"type": "str", "required": True},
    "compose_files": {"type": "list", "elements": "path", "required": True},
    "service": {"type": "str", "required": True},
    "retry_failed": {"type": "bool", "default": True},
    "gap_seconds": {"type": "float", "default": 0.0},
    "gpu_knobs": {"type": "list", "elements": "dict", "default": []},
    "gap_mode": {"type": "str", "default": "fixed", "choices": ["fixed", "thermal"]},
    "thermal_temp_tolerance_c": {"type": "float", "default": 2.0},
    "thermal_power_tolerance_pct": {"type": "float", "default": 10.0},
    "cold_start": {"type": "bool", "default": False},
    "max_restarts": {"type": "int", "default": 3},
    "run_id": {"type": "str"},
    "health_check_before": {"type": "bool", "default": False},
    "health_check_after_failure": {"type": "bool", "default": True},
    "gpu_memory_threshold_pct": {"type": "float", "default": 90.0},
    "wait_timeout": {"type": "int", "default": 600},
    "timeout": {"type": "int"},
    "cancel_grace": {"type": "float", "default": 30.0},
    "environment": {"type": "dict", "default": {}, "no_log": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    outcome = run_attempt(module.params, check_mode=module.check_mode, diff=module._diff)
    for warning in outcome.warnings:
        module.warn(warning)
    if outcome.msg is not None:
        module.fail_json(msg=outcome.msg, changed=outcome.changed, **outcome.returned)
    module.exit_json(changed=outcome.changed, **outcome.returned)


if __name__ == "__main__":
    main()
