"""The environment a result was measured in: host, CPU, GPUs, driver, CUDA, versions."""

from __future__ import annotations

import platform
import socket
from pathlib import Path

from llenergymeasure import __version__
from llenergymeasure.contracts.result import Environment
from llenergymeasure.measure import nvml
from llenergymeasure.measure.gpus import visible_gpu_indices

CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = CPUINFO) -> str | None:
    """The first 'model name' of /proc/cpuinfo (x86), else 'Hardware'/'Model' (Arm)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return platform.processor() or None
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Hardware", "Model"):
        if key in fields:
            return fields[key]
    return platform.processor() or None


def gpu_name(names: list[str | None]) -> str | None:
    """One name for the set: 'NVIDIA H100' or, for a mixed set, the distinct names joined."""
    distinct = list(dict.fromkeys(name for name in names if name))
    return " + ".join(distinct) if distinct else None


def collect_environment(
    device: str,
    versions: dict[str, str],
    gpu_indices: list[int] | None = None,
    cpuinfo: Path = CPUINFO,
) -> Environment:
    """Describe this host; GPU fields cover `gpu_indices` (default: the visible GPUs)."""
    indices = visible_gpu_indices() if gpu_indices is None else gpu_indices
    power_limits = [nvml.power_limit_w(index) for index in indices]
    sm_clocks = [nvml.clock_mhz(index, "sm") for index in indices]
    mem_clocks = [nvml.clock_mhz(index, "mem") for index in indices]
    return Environment(
        hostname=socket.gethostname(),
        cpu_model=cpu_model(cpuinfo),
        gpu_name=gpu_name([nvml.name(index) for index in indices]),
        gpu_count=len(indices),
        gpu_uuids=[uuid for uuid in (nvml.uuid(index) for index in indices) if uuid],
        driver_version=nvml.driver_version() if indices else None,
        cuda_version=nvml.cuda_driver_version() if indices else None,
        power_limit_w=[value for value in power_limits if value is not None],
        sm_clock_mhz=[value for value in sm_clocks if value is not None],
        mem_clock_mhz=[value for value in mem_clocks if value is not None],
        python_version=platform.python_version(),
        lem_version=__version__,
        versions=dict(versions),
        device=device,
    )
