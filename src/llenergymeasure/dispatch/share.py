"""A host's share of the plan, sorted by its manifest: pending, completed, failed and kept.

What the `lem_manifest` module returns: read-only, one read of the manifest, so that a
re-run loops only over what is left while the summary still gets every completed result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llenergymeasure.config.messages import format_validation_error
from llenergymeasure.controller.plan import PlannedExperiment
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


def classify(
    raw: dict[str, Any],
    experiment: PlannedExperiment,
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
    return "completed", identity | {"metrics": result.headline_metrics()}


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
