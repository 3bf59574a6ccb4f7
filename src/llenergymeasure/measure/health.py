"""A fast snapshot of the GPUs for `lem health`: memory, utilisation, temperature, processes.

Used between cycles by the orchestration, so it imports no engine and touches
nothing but NVML. Without an NVIDIA driver it reports `{"nvml": false}`.

The health rule counts only memory the service's own `lem worker` does not hold
(`memory_outside_worker_pct`): a worker keeps its model resident between experiments
by design (vLLM even reserves most of the GPU up front), so the memory used alone
would call for a restart every cycle. Where several backend services share a GPU, the
orchestration asks the GPU's holder only (the service of the next experiments), after
every other service released the GPU (`lem release`): the holder's memory is left out,
and anything else counts, a sibling service's leftover included (docs/worker.md).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from llenergymeasure.measure import nvml
from llenergymeasure.measure.gpus import visible_gpu_indices
from llenergymeasure.measure.window import process_owner


def memory_outside_worker_pct(
    used_mib: float | None, total_mib: float | None, worker_held_mib: float
) -> float | None:
    """% of a GPU's memory used by anything but the service's worker; None when unknown.

    `worker_held_mib` is what the worker reports holding on that GPU (its
    `gpu_memory_held_mib`: memory used after its last load, experiment or unload minus
    before its first load). What stays above the threshold after taking it off is held
    by something else (another process, an orphaned experiment, a leak): that is what a
    restart between cycles is for.
    """
    if used_mib is None or not total_mib:
        return None
    return round(100.0 * max(0.0, used_mib - worker_held_mib) / total_mib, 1)


def _gpu_health(index: int, worker_held_mib: float) -> dict[str, Any]:
    memory = nvml.memory_mib(index)
    used, total = memory if memory is not None else (None, None)
    processes = [
        {
            "pid": process.pid,
            "owner": process_owner(process.pid),
            "used_memory_mib": (
                None if process.used_memory_mib is None else round(process.used_memory_mib, 1)
            ),
        }
        for process in nvml.compute_processes(index) or []
    ]
    return {
        "index": index,
        "name": nvml.name(index),
        "uuid": nvml.uuid(index),
        "memory_used_mib": None if used is None else round(used, 1),
        "memory_total_mib": None if total is None else round(total, 1),
        "memory_used_pct": None if not total else round(100.0 * (used or 0.0) / total, 1),
        "memory_held_by_worker_mib": worker_held_mib,
        "memory_outside_worker_pct": memory_outside_worker_pct(used, total, worker_held_mib),
        "utilization_pct": nvml.utilization_pct(index),
        "temperature_c": nvml.temperature_c(index),
        "power_w": nvml.power_w(index),
        "processes": processes,
    }


def health_report(worker_held_mib: Mapping[int, float] | None = None) -> dict[str, Any]:
    """Per visible GPU: memory used/total, utilisation, temperature, power, compute processes.

    `worker_held_mib` (GPU index -> MiB, from the worker's status) gives each GPU's
    `memory_outside_worker_pct`; without it the worker is taken to hold nothing.

    `processes[].owner` is 'self' (this process tree), 'foreign' (another process of this
    PID namespace) or 'unknown' (a PID this namespace cannot see, e.g. from the host).
    """
    report: dict[str, Any] = {
        "nvml": nvml.available(),
        "hostname": socket.gethostname(),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpus": [],
    }
    if not report["nvml"]:
        report["reason"] = nvml.unavailable_reason()
        return report
    report["driver_version"] = nvml.driver_version()
    report["cuda_version"] = nvml.cuda_driver_version()
    held = worker_held_mib or {}
    report["gpus"] = [_gpu_health(index, held.get(index, 0.0)) for index in visible_gpu_indices()]
    return report
