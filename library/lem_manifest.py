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
    changed, or completed but with their result file gone), in plan order, and the stored
    results of those completed with the same config hash, so that a re-run loops only over
    what is left while the summary still gets every completed result.
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
    - Keys C(exp_id), C(config_name), C(cycle), C(host), C(metrics) (headline numbers)
      and C(result) (the content of its C(result.json)).
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
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from pydantic import ValidationError

    from llenergymeasure.campaign.manifest import Manifest, ManifestEntry, decide, load_manifest
    from llenergymeasure.campaign.plan import PlannedExperiment
    from llenergymeasure.config.loader import format_validation_error
    from llenergymeasure.errors import LemError
    from llenergymeasure.results.schema import ExperimentResult
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


def check_owner(manifest: Manifest, path: Path, campaign: str, host: str) -> None:
    """A manifest of another campaign or host must not decide this one's work."""
    for field, wanted in (("campaign_name", campaign), ("host", host)):
        found = getattr(manifest, field)
        if found and found != wanted:
            raise LemError(f"{path}: {field} is {found!r}, not {wanted!r}: refusing to mix")


def planned(experiments: list[dict[str, Any]], host: str) -> list[PlannedExperiment]:
    """The share's entries, validated; an error names the entry and the key."""
    checked = []
    for index, entry in enumerate(experiments):
        try:
            experiment = PlannedExperiment.model_validate(entry)
        except ValidationError as exc:
            raise LemError(format_validation_error("experiments", exc, (index,))) from None
        if experiment.host != host:
            raise LemError(
                f"experiments[{index}].host: {experiment.host!r} is not this host ({host!r})"
            )
        checked.append(experiment)
    return checked


def stored_result(state_dir: Path, entry: ManifestEntry) -> ExperimentResult | str:
    """The completed entry's result, or why it cannot be used."""
    path = state_dir / (entry.result_path or f"results/{entry.exp_id}/result.json")
    try:
        result = ExperimentResult.model_validate_json(path.read_bytes())
    except OSError as exc:
        return f"no result at {path}: {exc.strerror}"
    except ValidationError as exc:
        return f"{path}: not a valid result: {exc.errors()[0]['msg']}"
    found = (result.identity.exp_id, result.identity.config_hash)
    if found != (entry.exp_id, entry.config_hash):
        return f"{path}: result is for {found[0]!r} with hash {found[1]!r}"
    return result


def classify(
    raw: dict[str, Any],
    experiment: PlannedExperiment,
    entry: ManifestEntry | None,
    params: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """("pending" | "completed" | "failed_kept", the item to return) for one experiment."""
    decision = decide(entry, experiment.config_hash, params["retry_failed"])
    identity = {
        "exp_id": experiment.exp_id,
        "config_name": experiment.config_name,
        "cycle": experiment.cycle,
        "host": params["host"],
    }
    if entry is None or decision.run:
        return "pending", raw | {"reason": decision.reason, "detail": decision.detail}
    if decision.reason != "completed":  # a failure kept by policy
        return "failed_kept", identity | {"attempts": entry.attempts, "error": entry.error}
    result = stored_result(Path(params["state_dir"]), entry)
    if isinstance(result, str):  # the work is not really done: run it again
        detail = f"completed before, but {result}: running again"
        return "pending", raw | {"reason": "result-missing", "detail": detail}
    metrics = result.headline_metrics()
    return "completed", identity | {"metrics": metrics, "result": result.model_dump(mode="json")}


def sort_share(params: dict[str, Any], manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """The share's experiments as pending, completed and failed_kept, each in plan order."""
    sorted_share: dict[str, list[dict[str, Any]]] = {
        "pending": [],
        "completed": [],
        "failed_kept": [],
    }
    experiments = planned(params["experiments"], params["host"])
    for raw, experiment in zip(params["experiments"], experiments, strict=True):
        entry = manifest.entries.get(experiment.exp_id)
        kind, item = classify(raw, experiment, entry, params)
        sorted_share[kind].append(item)
    return sorted_share


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    params = module.params
    path = Path(params["state_dir"]) / "manifest.json"
    try:
        manifest = load_manifest(path)
        check_owner(manifest, path, params["campaign_name"], params["host"])
        share = sort_share(params, manifest)
    except LemError as exc:
        module.fail_json(msg=str(exc))
    counts = {
        "total": len(params["experiments"]),
        "completed": len(share["completed"]),
        "pending": len(share["pending"]),
        "failed": len(share["failed_kept"]),
    }
    module.exit_json(changed=False, counts=counts, **share)


if __name__ == "__main__":
    main()
