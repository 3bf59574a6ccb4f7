"""A fast snapshot of the GPUs for `lem health`: memory, utilisation, temperature, processes.

Used by the compose healthcheck and between cycles, so it imports no engine and
touches nothing but NVML. Without an NVIDIA driver it reports `{"nvml": false}`.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from llenergymeasure.measure import nvml
from llenergymeasure.measure.gpus import visible_gpu_indices
from llenergymeasure.measure.window import process_owner


def _gpu_health(index: int) -> dict[str, Any]:
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
        "utilization_pct": nvml.utilization_pct(index),
        "temperature_c": nvml.temperature_c(index),
        "power_w": nvml.power_w(index),
        "processes": processes,
    }


def health_report() -> dict[str, Any]:
    """Per visible GPU: memory used/total, utilisation, temperature, power, compute processes.

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
    report["gpus"] = [_gpu_health(index) for index in visible_gpu_indices()]
    return report
