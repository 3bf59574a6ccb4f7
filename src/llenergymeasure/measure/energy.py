"""From window readings to the result's energy, power and thermal sections (pure arithmetic).

Nothing here estimates: a quantity whose inputs were not measured is `None`.
With energy source `none` every energy field is `None`. GPU energy comes from the
NVML counter (`nvml`) or, on GPUs without it, from integrated power samples (`nvml_power`).
"""

from __future__ import annotations

from statistics import fmean

from llenergymeasure.contracts.result import Energy, EnergySource, Power, Thermal
from llenergymeasure.measure.nvml import THROTTLING_REASONS
from llenergymeasure.measure.window import Sample, WindowReadings

GPU_SOURCES: frozenset[EnergySource] = frozenset({"nvml", "nvml_power"})


def build_energy(
    readings: WindowReadings,
    baseline_w_per_gpu: list[float] | None,
    output_tokens: int,
    requests: int,
) -> tuple[Energy, Power, Thermal]:
    return (
        _energy(readings, baseline_w_per_gpu, output_tokens, requests),
        _power(readings),
        _thermal(readings),
    )


def _per(value: float | None, count: int) -> float | None:
    return None if value is None or count <= 0 else value / count


def idle_adjusted_j(
    energy_j_per_gpu: list[float], baseline_w_per_gpu: list[float], window_s: float
) -> float:
    """Energy above idle: sum over GPUs of (raw energy − idle power × window length)."""
    if len(energy_j_per_gpu) != len(baseline_w_per_gpu):
        raise ValueError(
            f"idle baseline has {len(baseline_w_per_gpu)} GPUs, "
            f"the window measured {len(energy_j_per_gpu)}"
        )
    return sum(
        energy - idle_w * window_s
        for energy, idle_w in zip(energy_j_per_gpu, baseline_w_per_gpu, strict=True)
    )


def _energy(
    readings: WindowReadings,
    baseline_w_per_gpu: list[float] | None,
    output_tokens: int,
    requests: int,
) -> Energy:
    if readings.source == "none":
        return Energy(source="none")
    on_gpu = readings.source in GPU_SOURCES
    gpu_per_gpu = readings.gpu_energy_j_per_gpu if on_gpu else None
    gpu_total = sum(gpu_per_gpu) if gpu_per_gpu is not None else None
    total = gpu_total if on_gpu else readings.cpu_energy_j
    adjusted = None
    if gpu_per_gpu is not None and baseline_w_per_gpu is not None:
        adjusted = idle_adjusted_j(gpu_per_gpu, baseline_w_per_gpu, readings.duration_s)
    return Energy(
        source=readings.source,
        gpu_energy_j=gpu_total,
        gpu_energy_j_per_gpu=gpu_per_gpu,
        cpu_energy_j=readings.cpu_energy_j,
        total_energy_j=total,
        idle_baseline_power_w=sum(baseline_w_per_gpu) if adjusted is not None else None,
        idle_baseline_power_w_per_gpu=baseline_w_per_gpu if adjusted is not None else None,
        idle_adjusted_energy_j=adjusted,
        j_per_output_token=_per(total, output_tokens),
        j_per_request=_per(total, requests),
        adjusted_j_per_output_token=_per(adjusted, output_tokens),
    )


def _complete(values: list[float | None]) -> list[float] | None:
    """The values when every GPU was read in this sample, else None (a partial sum would lie)."""
    if not values or any(value is None for value in values):
        return None
    return [value for value in values if value is not None]


def _power(readings: WindowReadings) -> Power:
    times: list[float] = []
    watts: list[float] = []
    for sample in readings.samples:
        per_gpu = _complete(sample.power_w)
        if per_gpu is not None:
            times.append(round(sample.t_s, 4))
            watts.append(round(sum(per_gpu), 3))
    return Power(
        sample_interval_ms=readings.sample_interval_ms,
        mean_w=fmean(watts) if watts else None,
        peak_w=max(watts) if watts else None,
        samples_t=times,
        samples_w=watts,
    )


def _hottest(sample: Sample) -> float | None:
    readable = [value for value in sample.temperature_c if value is not None]
    return max(readable) if readable else None


def _thermal(readings: WindowReadings) -> Thermal:
    # With several GPUs the hottest one is what throttles first: report it.
    hottest = [t for t in (_hottest(sample) for sample in readings.samples) if t is not None]
    reasons = sorted(readings.clock_event_reasons)
    return Thermal(
        temperature_start_c=hottest[0] if hottest else None,
        temperature_max_c=max(hottest) if hottest else None,
        temperature_mean_c=round(fmean(hottest), 2) if hottest else None,
        throttle_reasons=reasons,
        throttled=(
            bool(THROTTLING_REASONS.intersection(reasons))
            if readings.clock_events_measured
            else None
        ),
    )
