"""The one place that calls NVML (package ``nvidia-ml-py``, module ``pynvml``).

Every NVML call in the package goes through this module, so tests replace only
the library object underneath (``use_library``) with a fake that has pynvml's
function names. Readings that a device does not support come back as ``None``;
a host without the driver or the package simply has no NVML (``available()``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

# Bits of nvmlClocksEventReasons (the older name: ClocksThrottleReasons), from nvml.h.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that mean the GPU ran slower than it could: results measured under them are flagged.
THROTTLING_REASONS: frozenset[str] = frozenset(
    {
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    }
)

_MIB = 1024 * 1024
_lock = threading.Lock()
_library: Any = None
_initialised: bool | None = None  # None: not tried yet
_unavailable_reason: str = ""
_handles: dict[int, Any] = {}


@dataclass(frozen=True)
class ComputeProcess:
    pid: int
    used_memory_mib: float | None


def use_library(library: Any) -> None:
    """Use `library` (pynvml, or a fake with its names) from now on; `None` forgets the choice."""
    global _library, _initialised, _unavailable_reason
    with _lock:
        _library, _initialised, _unavailable_reason = library, None, ""
        _handles.clear()


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def _lib() -> Any:
    """The initialised library, or None. nvmlInit runs once per process."""
    global _library, _initialised, _unavailable_reason
    with _lock:
        if _initialised is None:
            try:
                if _library is None:
                    _library = _import_pynvml()
                _library.nvmlInit()
                _initialised = True
            except ImportError:
                _initialised, _unavailable_reason = False, "package nvidia-ml-py is not installed"
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                _initialised, _unavailable_reason = False, f"NVML did not initialise: {exc}"
        return _library if _initialised else None


def available() -> bool:
    return _lib() is not None


def unavailable_reason() -> str:
    """Why NVML is not available ('' when it is)."""
    _lib()
    return _unavailable_reason


def _call(function: str, *args: Any) -> Any:
    """Call an NVML function; None when NVML is absent, the call unsupported or failing."""
    lib = _lib()
    if lib is None:
        return None
    try:
        return getattr(lib, function)(*args)
    except AttributeError:  # a binding too old to have the function
        return None
    except lib.NVMLError:
        return None


def _handle(index: int) -> Any:
    handle = _handles.get(index)
    if handle is None:
        handle = _call("nvmlDeviceGetHandleByIndex", index)
        if handle is not None:
            _handles[index] = handle
    return handle


def _device_call(function: str, index: int, *args: Any) -> Any:
    handle = _handle(index)
    return None if handle is None else _call(function, handle, *args)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def device_count() -> int:
    return _call("nvmlDeviceGetCount") or 0


def name(index: int) -> str | None:
    return _text(_device_call("nvmlDeviceGetName", index))


def uuid(index: int) -> str | None:
    return _text(_device_call("nvmlDeviceGetUUID", index))


def driver_version() -> str | None:
    return _text(_call("nvmlSystemGetDriverVersion"))


def cuda_driver_version() -> str | None:
    """The CUDA version the driver supports, e.g. 12040 -> '12.4'."""
    version = _call("nvmlSystemGetCudaDriverVersion")
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def total_energy_mj(index: int) -> int | None:
    """The device's energy counter since driver load, in millijoules (Volta and newer)."""
    return _device_call("nvmlDeviceGetTotalEnergyConsumption", index)


def _instant_power_mw(index: int) -> float | None:
    lib = _lib()
    field_id = getattr(lib, "NVML_FI_DEV_POWER_INSTANT", None)
    if field_id is None:
        return None
    values = _device_call("nvmlDeviceGetFieldValues", index, [field_id])
    if not values or values[0].nvmlReturn != getattr(lib, "NVML_SUCCESS", 0):
        return None
    return float(values[0].value.uiVal)


def power_w(index: int) -> float | None:
    """Instant power where the device reports it, else NVML's (possibly averaged) power usage."""
    milliwatts = _instant_power_mw(index)
    if milliwatts is None:
        milliwatts = _device_call("nvmlDeviceGetPowerUsage", index)
    return None if milliwatts is None else milliwatts / 1000.0


def temperature_c(index: int) -> float | None:
    lib = _lib()
    sensor = getattr(lib, "NVML_TEMPERATURE_GPU", 0)
    value = _device_call("nvmlDeviceGetTemperature", index, sensor)
    return None if value is None else float(value)


def clock_event_bits(index: int) -> int | None:
    """The current clock event (throttle) reasons bitmask; the newer API first."""
    bits = _device_call("nvmlDeviceGetCurrentClocksEventReasons", index)
    if bits is None:
        bits = _device_call("nvmlDeviceGetCurrentClocksThrottleReasons", index)
    return bits


def decode_clock_events(bits: int) -> list[str]:
    """Names of the set bits; unknown bits are kept as hex so nothing is silently dropped."""
    names = [label for bit, label in CLOCK_EVENT_REASONS.items() if bits & bit]
    unknown = bits & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


def compute_processes(index: int) -> list[ComputeProcess] | None:
    processes = _device_call("nvmlDeviceGetComputeRunningProcesses", index)
    if processes is None:
        return None
    return [
        ComputeProcess(
            pid=int(process.pid),
            used_memory_mib=(
                None if process.usedGpuMemory is None else process.usedGpuMemory / _MIB
            ),
        )
        for process in processes
    ]


def memory_mib(index: int) -> tuple[float, float] | None:
    """(used, total) device memory in MiB."""
    info = _device_call("nvmlDeviceGetMemoryInfo", index)
    return None if info is None else (info.used / _MIB, info.total / _MIB)


def utilization_pct(index: int) -> float | None:
    rates = _device_call("nvmlDeviceGetUtilizationRates", index)
    return None if rates is None else float(rates.gpu)


def power_limit_w(index: int) -> float | None:
    milliwatts = _device_call("nvmlDeviceGetEnforcedPowerLimit", index)
    return None if milliwatts is None else milliwatts / 1000.0


def clock_mhz(index: int, domain: str) -> int | None:
    """Current clock of `domain` ('sm' or 'mem')."""
    lib = _lib()
    clock_type = getattr(lib, "NVML_CLOCK_SM" if domain == "sm" else "NVML_CLOCK_MEM", None)
    if clock_type is None:
        return None
    return _device_call("nvmlDeviceGetClockInfo", index, clock_type)
