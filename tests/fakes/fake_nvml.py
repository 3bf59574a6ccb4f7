"""A thin fake of the pynvml calls that `llenergymeasure.measure.nvml` makes.

It stands in for the library only (same function names, same units: mW, mJ,
bytes), so everything above that boundary runs for real. Each `FakeGpu`'s energy
counter advances with real time at its `power_w`, like the device's would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from llenergymeasure.measure import nvml

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_INVALID_ARGUMENT = 2


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


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
    created: float = field(default_factory=time.monotonic)

    def energy_mj(self) -> int:
        return self.energy_offset_mj + int(self.power_w * (time.monotonic() - self.created) * 1000)


class FakeNvml:
    """The pynvml surface: module-level names become attributes of an instance."""

    NVMLError = NVMLError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, gpus: list[FakeGpu], driver_loaded: bool = True) -> None:
        self.gpus = gpus
        self.driver_loaded = driver_loaded
        self.driver = "550.54.15"
        self.cuda = 12040
        self.calls: list[str] = []

    def _gpu(self, handle: int) -> FakeGpu:
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
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in self._gpu(handle).processes
        ]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
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
