"""A host's share of the plan, sorted by its manifest: pending, completed, failed and kept.

What the `lem_manifest` module returns: read-only, one read of the manifest, so that a
re-run loops only over what is left while the summary still gets every completed result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from llenergymeasure.contracts.headline import headline_metrics
from llenergymeasure.dispatch.result_file import UnusableResult, read_result
from llenergymeasure.errors import LemError
from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    check_owner,
    decide,
    load_manifest,
)

KINDS = ("pending", "completed", "failed_kept")


class Planned(NamedTuple):
    """What the share needs of a plan entry (the controller validated the whole entry)."""

    exp_id: str
    config_name: str
    cycle: int
    config_hash: str
    host: str


_KINDS = (str, str, int, str, str)  # Planned's fields' types


def _planned_entry(entry: Any, index: int) -> Planned:
    if not isinstance(entry, dict):
        raise LemError(f"experiments[{index}]: not a plan entry: {str(entry)[:200]!r}")
    for key, kind in zip(Planned._fields, _KINDS, strict=True):
        value = entry.get(key)
        if type(value) is not kind:  # exactly: a bool is no cycle
            raise LemError(f"experiments[{index}].{key}: {value!r} is not a {kind.__name__}")
    return Planned(*(entry[key] for key in Planned._fields))


def planned(experiments: list[dict[str, Any]], host: str) -> list[Planned]:
    """The share's entries as the plan holds them; an error names the entry and the key."""
    checked = []
    for index, entry in enumerate(experiments):
        experiment = _planned_entry(entry, index)
        if experiment.host != host:
            raise LemError(
                f"experiments[{index}].host: {experiment.host!r} is not this host ({host!r})"
            )
        checked.append(experiment)
    return checked


def classify(
    raw: dict[str, Any],
    experiment: Planned,
    entry: ManifestEntry | None,
    params: Mapping[str, Any],
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
    path = Path(params["state_dir"]) / (entry.result_path or f"results/{entry.exp_id}/result.json")
    try:
        result = read_result(path, entry.exp_id, entry.config_hash)
    except UnusableResult as exc:  # the work is not really done: run it again
        detail = f"completed before, but {exc}: running again"
        return "pending", raw | {"reason": "result-missing", "detail": detail}
    return "completed", identity | {"metrics": headline_metrics(result)}


def sort_share(params: Mapping[str, Any], manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """The share's experiments as pending, completed and failed_kept, each in plan order."""
    sorted_share: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    experiments = planned(params["experiments"], params["host"])
    for raw, experiment in zip(params["experiments"], experiments, strict=True):
        entry = manifest.entries.get(experiment.exp_id)
        kind, item = classify(raw, experiment, entry, params)
        sorted_share[kind].append(item)
    return sorted_share


def share_status(params: Mapping[str, Any]) -> dict[str, Any]:
    """What `lem_manifest` returns (changed aside): the sorted share and its counts.

    LemError when the manifest cannot be read, is another campaign's or host's, or an
    entry of the share is invalid.
    """
    path = Path(params["state_dir"]) / "manifest.json"
    manifest = load_manifest(path)
    check_owner(manifest, path, params["campaign_name"], params["host"])
    share = sort_share(params, manifest)
    counts = {
        "total": len(params["experiments"]),
        "completed": len(share["completed"]),
        "pending": len(share["pending"]),
        "failed": len(share["failed_kept"]),
    }
    return {"counts": counts, **share}
