"""The one place that calls NVML (package ``nvidia-ml-py``, module ``pynvml``).

Every NVML call in the package goes through `_call` / `_device_call` here, with the
function's name as a string literal, so tests replace only the library object
underneath (``use_library``) with a fake that has pynvml's names, and a unit test
(tests/unit/test_nvml_binding.py) checks every name and argument count used here
against the installed pynvml.

What a failure means decides what the caller sees:

- the device or its driver cannot answer (`NVMLError_NotSupported`, `_FunctionNotFound`,
  a `NVMLLibraryMismatchError` of an unversioned binding, a lost GPU): the reading is
  ``None`` and the caller falls back or reports it as not measured;
- the installed pynvml has no such function or constant (a renamed or removed binding):
  also ``None``, but recorded in `problems()`, logged as an error and copied into every
  result's warnings, so an outdated package never passes for "no energy on this GPU".

A failed `nvmlInit` (driver not loaded yet, library missing) is retried after
`INIT_RETRY_S` and at every `refresh()` (each new experiment), so a long-lived worker
started before the driver was ready measures once it is. One lock guards the library
state and the handle cache: the sampler thread and the main thread share them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

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
# A failed nvmlInit is tried again after this many seconds (or at the next `refresh()`).
INIT_RETRY_S = 30.0

_MIB = 1024 * 1024
# Re-entrant: `_handle` holds it while `_call` initialises the library.
_lock = threading.RLock()
_library: Any = None
_initialised: bool | None = None  # None: not tried yet (or tried again at the next call)
_failed_at = 0.0
_unavailable_reason: str = ""
_handles: dict[int, Any] = {}
_problems: list[str] = []
_clock: Callable[[], float] = time.monotonic  # tests move it to pass the retry back-off


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
        _problems.clear()


def refresh() -> None:
    """Try `nvmlInit` again at the next call when it failed before (a new experiment starts)."""
    global _initialised
    with _lock:
        if _initialised is False:
            _initialised = None


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def _lib() -> Any:
    """The initialised library, or None; a failed init is retried after `INIT_RETRY_S`."""
    global _library, _initialised, _unavailable_reason, _failed_at
    with _lock:
        if _initialised is False and _clock() - _failed_at >= INIT_RETRY_S:
            _initialised = None
        if _initialised is None:
            try:
                if _library is None:
                    _library = _import_pynvml()
                _library.nvmlInit()
                _initialised, _unavailable_reason = True, ""
                _handles.clear()  # handles of an earlier initialisation are not reused
            except ImportError:
                _initialised, _unavailable_reason = False, "package nvidia-ml-py is not installed"
                _failed_at = _clock()
            # NVMLError_LibraryNotFound, _DriverNotLoaded, NVMLLibraryMismatchError, OSError...:
            # whatever the binding raises, NVML is just not available (yet).
            except Exception as exc:
                _initialised = False
                _unavailable_reason = f"NVML did not initialise: {type(exc).__name__}: {exc}"
                _failed_at = _clock()
        return _library if _initialised else None


def available() -> bool:
    return _lib() is not None


def unavailable_reason() -> str:
    """Why NVML is not available ('' when it is)."""
    _lib()
    return _unavailable_reason


def problems() -> list[str]:
    """Bindings the installed pynvml lacks, as result warnings (empty when all are there)."""
    with _lock:
        return list(_problems)


def _problem(message: str) -> None:
    with _lock:
        if message in _problems:
            return
        _problems.append(message)
    log.error("%s", message)


def _missing_binding(names: tuple[str, ...]) -> None:
    _problem(
        f"the installed nvidia-ml-py ({_package_version()}) has no {' or '.join(names)}: "
        "these NVML readings are missing from the result; install a version that has it"
    )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-ml-py")
    except PackageNotFoundError:
        return "version unknown"


def _device_error_types(lib: Any) -> tuple[type[BaseException], ...]:
    """What pynvml raises when the device or driver cannot answer (not a missing binding)."""
    mismatch = getattr(lib, "NVMLLibraryMismatchError", None)
    return (lib.NVMLError,) if mismatch is None else (lib.NVMLError, mismatch)


def _call(functions: str | tuple[str, ...], *args: Any) -> Any:
    """The first answer of `functions` (tried in order: newer API first); None when NVML is
    absent or none answers. A function the binding lacks is skipped, and recorded as a
    problem when none of them exists."""
    lib = _lib()
    if lib is None:
        return None
    names = (functions,) if isinstance(functions, str) else functions
    found = False
    for name in names:
        function = getattr(lib, name, None)
        if function is None:
            continue
        found = True
        try:
            value = function(*args)
        except _device_error_types(lib) as exc:
            log.debug("%s: %s", name, exc)  # not supported here, driver too old, GPU lost
            continue
        if value is not None:
            return value
    if not found:
        _missing_binding(names)
    return None


def _constant(name: str) -> Any:
    """A constant of pynvml (NVML_…); None, recorded as a problem, when it lacks it."""
    lib = _lib()
    if lib is None:
        return None
    value = getattr(lib, name, None)
    if value is None:
        _missing_binding((name,))
    return value


def _handle(index: int) -> Any:
    """The handle of NVML device `index`, cached (under the lock: two threads use it)."""
    with _lock:
        handle = _handles.get(index)
        if handle is None:
            handle = _call("nvmlDeviceGetHandleByIndex", index)
            if handle is not None:
                _handles[index] = handle
        return handle


def _device_call(functions: str | tuple[str, ...], index: int, *args: Any) -> Any:
    handle = _handle(index)
    return None if handle is None else _call(functions, handle, *args)


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


def index_of_uuid(device_uuid: str) -> int | None:
    """The NVML index of the GPU with this full UUID (`GPU-…`), or of the GPU that holds
    the MIG instance `MIG-…`; None when NVML knows no such device.

    The handle comes from nvmlDeviceGetHandleByUUID, so a GPU named by UUID (as in
    CUDA_VISIBLE_DEVICES) is the one read, whatever order CUDA enumerates devices in.
    """
    handle = _call("nvmlDeviceGetHandleByUUID", device_uuid)
    if handle is not None and device_uuid.startswith("MIG-"):
        # Energy, power and clocks are the parent GPU's: a MIG instance has none of its own.
        handle = _call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
    if handle is None:
        return None
    index = _call("nvmlDeviceGetIndex", handle)
    if index is None:
        return None
    with _lock:
        _handles.setdefault(int(index), handle)
    return int(index)


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
    field_id = _constant("NVML_FI_DEV_POWER_INSTANT")
    if field_id is None:
        return None
    values = _device_call("nvmlDeviceGetFieldValues", index, [field_id])
    if not values or values[0].nvmlReturn != _constant("NVML_SUCCESS"):
        return None
    return float(values[0].value.uiVal)


def power_w(index: int) -> float | None:
    """Instant power where the device reports it, else NVML's (possibly averaged) power usage."""
    milliwatts = _instant_power_mw(index)
    if milliwatts is None:
        milliwatts = _device_call("nvmlDeviceGetPowerUsage", index)
    return None if milliwatts is None else milliwatts / 1000.0


def temperature_c(index: int) -> float | None:
    sensor = _constant("NVML_TEMPERATURE_GPU")
    if sensor is None:
        return None
    value = _device_call("nvmlDeviceGetTemperature", index, sensor)
    return None if value is None else float(value)


def mig_enabled(index: int) -> bool | None:
    """Whether MIG mode is on for GPU `index` (its instances share its counters); None when
    NVML cannot say (a GPU without MIG answers NOT_SUPPORTED)."""
    enabled = _constant("NVML_DEVICE_MIG_ENABLE")
    modes = _device_call("nvmlDeviceGetMigMode", index)  # [current, pending]
    return None if enabled is None or modes is None else modes[0] == enabled


def clock_event_bits(index: int) -> int | None:
    """The current clock event (throttle) reasons bitmask; the newer API first."""
    return _device_call(
        ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
        index,
    )


def decode_clock_events(bits: int) -> list[str]:
    """Names of the set bits; unknown bits are kept as hex so nothing is silently dropped."""
    names = [label for bit, label in CLOCK_EVENT_REASONS.items() if bits & bit]
    unknown = bits & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


def compute_processes(index: int) -> list[ComputeProcess] | None:
    # The unversioned binding calls the driver's _v3 and raises NVMLLibraryMismatchError on a
    # driver without it (before R510): _v2 answers there.
    processes = _device_call(
        ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"),
        index,
    )
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
    clock_type = _constant("NVML_CLOCK_SM" if domain == "sm" else "NVML_CLOCK_MEM")
    if clock_type is None:
        return None
    return _device_call("nvmlDeviceGetClockInfo", index, clock_type)


# --- GPU knobs (clocks, power limit): setters and their ranges, for dispatch/knobs.py -----------


class NvmlCallError(Exception):
    """An NVML call the caller cannot do without failed. `reason`: 'no_permission',
    'not_supported', 'unavailable' (no NVML, no such GPU, no such binding) or 'other'."""

    def __init__(self, function: str, reason: str, text: str) -> None:
        super().__init__(f"{function}: {text}")
        self.function, self.reason, self.text = function, reason, text


def _checked_call(function: str, index: int, *args: Any) -> Any:
    """`function(handle of index, *args)`, raising NvmlCallError instead of answering None:
    a setter's failure (no permission, not supported) must reach the user with its reason."""
    lib = _lib()
    if lib is None:
        raise NvmlCallError(
            function, "unavailable", f"NVML is not available: {unavailable_reason()}"
        )
    handle = _handle(index)
    if handle is None:
        raise NvmlCallError(function, "unavailable", f"NVML has no GPU at index {index}")
    bound = getattr(lib, function, None)
    if bound is None:
        raise NvmlCallError(
            function,
            "unavailable",
            f"the installed nvidia-ml-py ({_package_version()}) has no {function}",
        )
    try:
        return bound(handle, *args)
    except lib.NVMLError as exc:
        raise NvmlCallError(function, _reason(getattr(exc, "value", None)), str(exc)) from None


def _reason(code: int | None) -> str:
    if code is not None and code == _constant("NVML_ERROR_NO_PERMISSION"):
        return "no_permission"
    if code is not None and code == _constant("NVML_ERROR_NOT_SUPPORTED"):
        return "not_supported"
    return "other"


def supported_memory_clocks(index: int) -> list[int]:
    return [int(mhz) for mhz in _checked_call("nvmlDeviceGetSupportedMemoryClocks", index)]


def supported_graphics_clocks(index: int, memory_clock_mhz: int) -> list[int]:
    return [
        int(mhz)
        for mhz in _checked_call("nvmlDeviceGetSupportedGraphicsClocks", index, memory_clock_mhz)
    ]


def power_limit_constraints_mw(index: int) -> tuple[int, int]:
    low, high = _checked_call("nvmlDeviceGetPowerManagementLimitConstraints", index)
    return int(low), int(high)


def power_management_limit_mw(index: int) -> int:
    return int(_checked_call("nvmlDeviceGetPowerManagementLimit", index))


def current_clock_mhz(index: int, domain: str) -> int:
    """The clock of `domain` ('sm' or 'mem') now, raising NvmlCallError when unreadable."""
    clock_type = _constant("NVML_CLOCK_SM" if domain == "sm" else "NVML_CLOCK_MEM")
    return int(_checked_call("nvmlDeviceGetClockInfo", index, clock_type))


def lock_clock(index: int, domain: str, mhz: int) -> None:
    """Lock the `domain` clock at `mhz` (min = max)."""
    if domain == "sm":
        _checked_call("nvmlDeviceSetGpuLockedClocks", index, mhz, mhz)
    else:
        _checked_call("nvmlDeviceSetMemoryLockedClocks", index, mhz, mhz)


def reset_clock(index: int, domain: str) -> None:
    if domain == "sm":
        _checked_call("nvmlDeviceResetGpuLockedClocks", index)
    else:
        _checked_call("nvmlDeviceResetMemoryLockedClocks", index)


def set_power_limit_mw(index: int, milliwatts: int) -> None:
    _checked_call("nvmlDeviceSetPowerManagementLimit", index, milliwatts)
