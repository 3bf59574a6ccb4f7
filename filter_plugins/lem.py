"""Jinja2 filters over a campaign plan (plan.json) for the campaign playbook and roles.

Thin on purpose: they slice and annotate plan entries (dicts as in plan.json). The
host's share is the package's rule (`host_share_of`); the filters own only what the
play's loop needs: the gap before each entry (config or cycle gap), the services the
entries need, and the split into (cycle, service) segments. The service of an entry is
the plan's (`contracts.services.service_of`). What to run again on resume is decided by
the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    from llenergymeasure.contracts.services import image_build_of
    from llenergymeasure.controller.plan import host_share_of
except ImportError as exc:  # named when a filter runs, not as a silent plugin-load warning
    LEM_IMPORT_ERROR: str | None = f"the llenergymeasure package is not importable: {exc}"
else:
    LEM_IMPORT_ERROR = None

PlanEntry = Mapping[str, Any]


def _require(entry: Any, key: str, filter_name: str, index: int) -> Any:
    """`entry[key]`, or an error naming the filter, the entry and the key."""
    if not isinstance(entry, Mapping):
        raise AnsibleFilterError(
            f"{filter_name}: entry [{index}] must be a mapping, got {type(entry).__name__}: "
            f"{entry!r}"
        )
    if key not in entry:
        raise AnsibleFilterError(
            f"{filter_name}: entry [{index}] ({entry.get('exp_id', '?')}) has no key {key!r}"
        )
    return entry[key]


def _entries(value: Any, filter_name: str) -> list[PlanEntry]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise AnsibleFilterError(
            f"{filter_name}: expected a list of plan entries, got {type(value).__name__}"
        )
    return list(value)


def lem_host_share(plan: Mapping[str, Any], host: str) -> list[dict[str, Any]]:
    """The experiments of `plan` assigned to `host`, in plan order (by `position`).

    An adapter: it checks the entries' shape; the rule is the package's `host_share_of`.
    """
    name = "lem_host_share"
    if LEM_IMPORT_ERROR:
        raise AnsibleFilterError(f"{name}: {LEM_IMPORT_ERROR}")
    if not isinstance(plan, Mapping) or "experiments" not in plan:
        raise AnsibleFilterError(f"{name}: the plan has no 'experiments' key")
    share = host_share_of(
        list(enumerate(_entries(plan["experiments"], name))),
        host,
        host_of=lambda item: _require(item[1], "host", name, item[0]),
        position_of=lambda item: int(_require(item[1], "position", name, item[0])),
    )
    return [dict(entry) for _, entry in share]


def lem_with_gaps(
    pending: Iterable[PlanEntry], config_gap: float, cycle_gap: float, knob_settle: float = 0.0
) -> list[dict[str, Any]]:
    """Copies of `pending` with `gap_seconds`: the pause to take before each one runs.

    The first run needs no gap (nothing ran just before it in this play); a change of
    cycle gets the cycle gap, any other step the config gap. A change of GPU setting
    (docs/knobs.md) waits at least `knob_settle`, the first run too when it sets one.
    """
    gaps = {"config_gap": float(config_gap), "cycle_gap": float(cycle_gap)}
    gaps["knob_settle"] = float(knob_settle)
    for name, seconds in gaps.items():
        if seconds < 0:
            raise AnsibleFilterError(f"lem_with_gaps: {name} must be >= 0, got {seconds}")
    annotated: list[dict[str, Any]] = []
    previous_cycle: int | None = None
    previous_gpu: dict[str, Any] | None = None
    for i, entry in enumerate(_entries(pending, "lem_with_gaps")):
        cycle = int(_require(entry, "cycle", "lem_with_gaps", i))
        gpu = _gpu_setting(entry)
        if previous_cycle is None:
            gap = 0.0
        elif cycle != previous_cycle:
            gap = gaps["cycle_gap"]
        else:
            gap = gaps["config_gap"]
        if gpu != previous_gpu:
            gap = max(gap, gaps["knob_settle"])
        annotated.append({**entry, "gap_seconds": gap})
        previous_cycle, previous_gpu = cycle, gpu
    return annotated


def lem_services(
    experiments: Iterable[PlanEntry], variants: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """The compose services these experiments need, by name (sorted), each with its
    ``backend`` and ``build``: scripts/build-images.sh's arguments for its image, the
    backend's image variant in `variants` (pytorch -> pytorch-cpu on a CPU host) plus
    --engine-version for an engine version other than the pinned one (`vllm-0.33.0`).
    """
    name = "lem_services"
    if LEM_IMPORT_ERROR:
        raise AnsibleFilterError(f"{name}: {LEM_IMPORT_ERROR}")
    services: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(_entries(experiments, name)):
        service = str(_require(entry, "service", name, i))
        backend = str(_require(entry, "backend", name, i))
        if backend not in variants:
            raise AnsibleFilterError(
                f"{name}: no image variant for backend {backend!r} (variants: "
                f"{', '.join(sorted(variants))})"
            )
        config = {**(_require(entry, "config", name, i) or {}), "backend": backend}
        services[service] = {"backend": backend, "build": image_build_of(config, variants[backend])}
    return dict(sorted(services.items()))


def lem_cycle_segments(pending: Iterable[PlanEntry]) -> list[dict[str, Any]]:
    """Split `pending` into runs of consecutive entries of one cycle, service and GPU setting.

    Each segment is ``{"cycle": N, "service": S, "gpu": G, "experiments": [...]}``, in plan
    order, S the entries' compose service (a backend, or a backend at an engine version:
    `vllm-0.33.0`), G the config's `gpu` knobs (None: none set); the roles apply G before
    the segment and restore the GPU after it (docs/knobs.md).
    Before each segment the roles hand the GPU to S (the other services release it) and
    run a health check, so a segment is one holder of the GPU. The plan keeps a cycle's
    experiments of one service together; a (cycle, service) pair can still appear in
    several segments when the order is grouped or the plan predates that.
    """
    name = "lem_cycle_segments"
    segments: list[dict[str, Any]] = []
    for i, entry in enumerate(_entries(pending, name)):
        cycle = int(_require(entry, "cycle", name, i))
        service = str(_require(entry, "service", name, i))
        gpu = _gpu_setting(entry)
        key = (cycle, service, gpu)
        if (
            not segments
            or (segments[-1]["cycle"], segments[-1]["service"], segments[-1]["gpu"]) != key
        ):
            segments.append({"cycle": cycle, "service": service, "gpu": gpu, "experiments": []})
        segments[-1]["experiments"].append(dict(entry))
    return segments


def _gpu_setting(entry: PlanEntry) -> dict[str, Any] | None:
    """The entry's GPU knobs (its config's `gpu` section), None when none is set."""
    gpu = (entry.get("config") or {}).get("gpu") or {}
    return dict(gpu) if any(value is not None for value in gpu.values()) else None


class FilterModule:
    """Ansible entry point: the filter names the playbooks use."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "lem_host_share": lem_host_share,
            "lem_with_gaps": lem_with_gaps,
            "lem_services": lem_services,
            "lem_cycle_segments": lem_cycle_segments,
        }
