"""A thin fake of the pynvml calls that `llenergymeasure.measure.nvml` makes.

It stands in for the library only (same function names, same units: mW, mJ,
bytes, and pynvml's own exception classes), so everything above that boundary runs
for real. Each `FakeGpu`'s energy counter advances with real time at its
`energy_rate_w` (default: its `power_w`), like the device's would.

The fake may only have names the installed pynvml has, with the same number of
positional parameters: `check_names` runs when this module (or a subclass) is defined,
so a fake can never make a call pass that the real binding would not have.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

from llenergymeasure.measure import nvml

NVML_SUCCESS = pynvml.NVML_SUCCESS
NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
NVML_ERROR_INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT
NVML_ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
# pynvml's own classes: NVMLError(code) builds the subclass for the code (NVMLError_NotSupported…).
NVMLError = pynvml.NVMLError


def check_names(cls: type) -> None:
    """TypeError when `cls` has an nvml*/NVML* name the installed pynvml lacks, or a function
    whose positional parameters (without self) differ in number from pynvml's."""
    for name, value in vars(cls).items():
        if not name.startswith(("nvml", "NVML")):
            continue
        real = getattr(pynvml, name, None)
        if real is None:
            raise TypeError(f"{cls.__name__}.{name}: the installed pynvml has no {name}")
        if callable(value) and not isinstance(value, type):
            fake_params = list(inspect.signature(value).parameters)[1:]
            real_params = list(inspect.signature(real).parameters)
            if len(fake_params) != len(real_params):
                raise TypeError(
                    f"{cls.__name__}.{name}{tuple(fake_params)}: "
                    f"pynvml's takes {tuple(real_params)}"
                )


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    power_w: float = 100.0
    temperature_c: int = 40
    clock_event_bits: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    memory_used: int = 1 << 30
    memory_total: int = 80 << 30
    utilization: int = 0
    power_limit_mw: int = 700_000
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    energy_supported: bool = True
    instant_power_supported: bool = True
    power_supported: bool = True  # False: neither power reading answers
    event_reasons_api: bool = True  # False: only the older ClocksThrottleReasons answers
    energy_offset_mj: int = 1_000_000_000
    # What the energy counter advances at (W); None: at `power_w`. Power readings are instant
    # values, the counter integrates the true draw: they differ on a real GPU.
    energy_rate_w: float | None = None
    processes_v3: bool = True  # False: a driver before R510, only the _v2 process list answers
    mig_uuids: list[str] = field(default_factory=list)
    mig_mode: bool | None = None  # None: a GPU without MIG (NVML answers NOT_SUPPORTED)
    # GPU knobs: what the card supports, whether the caller may set them
    supported_mem_clocks: list[int] = field(default_factory=lambda: [2619, 1593])
    supported_sm_clocks: list[int] = field(default_factory=lambda: list(range(1980, 344, -15)))
    power_constraints_mw: tuple[int, int] = (200_000, 700_000)
    knobs_permitted: bool = True
    knobs_supported: bool = True
    boost_sm_clock_mhz: int = 1980  # what a reset of the SM lock returns to
    boost_mem_clock_mhz: int = 2619
    created: float = field(default_factory=time.monotonic)

    def energy_mj(self) -> int:
        rate = self.power_w if self.energy_rate_w is None else self.energy_rate_w
        return self.energy_offset_mj + int(rate * (time.monotonic() - self.created) * 1000)


@dataclass(frozen=True)
class MigHandle:
    parent: int


class FakeNvml:
    """The pynvml surface: module-level names become attributes of an instance.

    `missing` names bindings this fake pretends not to have (an older or renamed pynvml).
    """

    NVMLError = NVMLError
    NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_names(cls)

    def __init__(
        self, gpus: list[FakeGpu], driver_loaded: bool = True, missing: frozenset[str] = frozenset()
    ) -> None:
        self.gpus = gpus
        self.driver_loaded = driver_loaded
        self.missing = missing
        self.driver = "550.54.15"
        self.cuda = 12040
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith(("nvml", "NVML")) and name in object.__getattribute__(self, "missing"):
            raise AttributeError(f"module 'pynvml' has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def _gpu(self, handle: int) -> FakeGpu:
        if isinstance(handle, MigHandle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[handle]

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if not self.driver_loaded:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int | MigHandle:
        self.calls.append("handle_by_uuid")
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return index
            if uuid in gpu.mig_uuids:
                return MigHandle(parent=index)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: MigHandle) -> int:
        return migDevice.parent

    def nvmlDeviceGetMigMode(self, device: int) -> list[int]:
        mode = self._gpu(device).mig_mode
        if mode is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        current = int(mode) * pynvml.NVML_DEVICE_MIG_ENABLE
        return [current, current]  # [current, pending]

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        self._gpu(handle)
        return handle

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle).uuid

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self.calls.append("energy")
        gpu = self._gpu(handle)
        if not gpu.energy_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.energy_mj()

    def nvmlDeviceGetFieldValues(self, handle: int, field_ids: list[int]) -> list[Any]:
        self.calls.append("field_values")
        gpu = self._gpu(handle)
        supported = (
            gpu.power_supported
            and gpu.instant_power_supported
            and field_ids == [self.NVML_FI_DEV_POWER_INSTANT]
        )
        status = NVML_SUCCESS if supported else NVML_ERROR_NOT_SUPPORTED
        value = SimpleNamespace(uiVal=int(gpu.power_w * 1000) if supported else 0)
        return [SimpleNamespace(fieldId=field_ids[0], nvmlReturn=status, value=value)]

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self.calls.append("power_usage")
        gpu = self._gpu(handle)
        if not gpu.power_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(gpu.power_w * 1000)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temperature_c

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        gpu = self._gpu(handle)
        if not gpu.event_reasons_api:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.clock_event_bits

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: int) -> int:
        return self._gpu(handle).clock_event_bits

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        if not self._gpu(handle).processes_v3:
            # what pynvml's @throwOnVersionMismatch raises when the driver lacks the _v3 call
            raise pynvml.NVMLLibraryMismatchError("Unversioned function called")
        return self.nvmlDeviceGetComputeRunningProcesses_v2(handle)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: int) -> list[Any]:
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in self._gpu(handle).processes
        ]

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: Any = None) -> Any:
        gpu = self._gpu(handle)
        return SimpleNamespace(
            used=gpu.memory_used, total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=self._gpu(handle).utilization, memory=0)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return self._gpu(handle).power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: int, clock_type: int) -> int:
        gpu = self._gpu(handle)
        return gpu.sm_clock_mhz if clock_type == self.NVML_CLOCK_SM else gpu.mem_clock_mhz

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: int) -> list[int]:
        return list(self._knob_gpu(handle, setter=False).supported_mem_clocks)

    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: int, memoryClockMHz: int) -> list[int]:
        gpu = self._knob_gpu(handle, setter=False)
        if memoryClockMHz not in gpu.supported_mem_clocks:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return list(gpu.supported_sm_clocks)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: int) -> list[int]:
        return list(self._knob_gpu(handle, setter=False).power_constraints_mw)

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        return self._gpu(handle).power_limit_mw

    def nvmlDeviceSetGpuLockedClocks(
        self, handle: int, minGpuClockMHz: int, maxGpuClockMHz: int
    ) -> None:
        self.calls.append(f"lock_sm:{minGpuClockMHz}")
        self._knob_gpu(handle).sm_clock_mhz = maxGpuClockMHz

    def nvmlDeviceResetGpuLockedClocks(self, handle: int) -> None:
        self.calls.append("reset_sm")
        gpu = self._knob_gpu(handle)
        gpu.sm_clock_mhz = gpu.boost_sm_clock_mhz

    def nvmlDeviceSetMemoryLockedClocks(
        self, handle: int, minMemClockMHz: int, maxMemClockMHz: int
    ) -> None:
        self.calls.append(f"lock_mem:{minMemClockMHz}")
        self._knob_gpu(handle).mem_clock_mhz = maxMemClockMHz

    def nvmlDeviceResetMemoryLockedClocks(self, handle: int) -> None:
        self.calls.append("reset_mem")
        gpu = self._knob_gpu(handle)
        gpu.mem_clock_mhz = gpu.boost_mem_clock_mhz

    def nvmlDeviceSetPowerManagementLimit(self, handle: int, limit: int) -> None:
        self.calls.append(f"power_limit:{limit}")
        gpu = self._knob_gpu(handle)
        low, high = gpu.power_constraints_mw
        if not low <= limit <= high:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu.power_limit_mw = limit

    def _knob_gpu(self, handle: int, setter: bool = True) -> FakeGpu:
        """The GPU, or the error a real card gives: not supported, or (setters) no permission."""
        gpu = self._gpu(handle)
        if not gpu.knobs_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if setter and not gpu.knobs_permitted:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return gpu


check_names(FakeNvml)


def gpus(count: int, **overrides: Any) -> list[FakeGpu]:
    """`count` distinct fake GPUs sharing `overrides`."""
    return [
        FakeGpu(uuid=f"GPU-{index:08d}-aaaa-bbbb-cccc-{index:012d}", **overrides)
        for index in range(count)
    ]


@contextmanager
def installed(fake: FakeNvml) -> Iterator[FakeNvml]:
    """Put `fake` under `llenergymeasure.measure.nvml` for the duration of the block."""
    nvml.use_library(fake)
    try:
        yield fake
    finally:
        nvml.use_library(None)
