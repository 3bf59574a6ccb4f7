"""One server-mode experiment against a server that is up: load, window, result.

The energy meter runs from before the load generator starts to after it ends; the
requests' times are put on the meter's clock, the steady window is found in them
(measure/steady.py), and the window's energy is the rise of each GPU's NVML energy
counter between its edges (read at every sample, interpolated at the edges; summed over
the GPUs). GPUs without the counter have their power trace integrated; a CPU host has
RAPL's total, read and interpolated the same way; with no meter (a CPU host without
RAPL) it is null.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.result import (
    Energy,
    EnergySource,
    ExperimentResult,
    Identity,
    Serving,
    Throughput,
    Timing,
    Tokens,
    Ttft,
)
from llenergymeasure.errors import ExperimentError
from llenergymeasure.measure.energy import GPU_SOURCES, build_energy
from llenergymeasure.measure.environment import collect_environment
from llenergymeasure.measure.steady import (
    ServedRequest,
    steady_window,
    trace_energy,
    value_at,
)
from llenergymeasure.measure.window import EnergyMeter, Sample, WindowReadings
from llenergymeasure.runner import loadgen
from llenergymeasure.runner.servers import ServerProcess
from llenergymeasure.runner.serving import serving_block, write_requests

REPORT_FILE = "guidellm-report.json"
# What the result's environment names: the servers' and the load generator's packages.
SERVER_PACKAGES = ("transformers", "torch", "vllm", "tensorrt_llm", "guidellm")
# GuideLLM 0.8.1 spawns max_worker_processes (default 10) worker processes, each importing
# it afresh (multiprocessing "spawn"): on a 2-core host that took ~28 s before the first
# request. One process drives up to 1,024 requests in flight (async HTTP), so the host's
# cores are enough workers.
GUIDELLM_MAX_WORKERS = 10


def generator_env() -> dict[str, str]:
    """GuideLLM's environment: its worker processes capped at the cores this process has."""
    workers = max(1, min(GUIDELLM_MAX_WORKERS, len(os.sched_getaffinity(0))))
    return {**os.environ, "GUIDELLM__MAX_WORKER_PROCESSES": str(workers)}


@dataclass
class ServerRun:
    requests: list[ServedRequest]
    serving: Serving
    readings: WindowReadings
    warnings: list[str]
    energy_source: EnergySource = "none"  # of serving.energy_j


def window_energy(
    readings: WindowReadings, start: float, end: float
) -> tuple[float | None, EnergySource]:
    """Joules between `start` and `end` (meter clock) and their source. The edges are known
    only after the load, so the meter's cumulative counters, read at every sample, are
    interpolated at them: each GPU's NVML energy counter ('nvml'); for GPUs without one,
    their power trace integrated ('nvml_power'); on a CPU host, RAPL's total ('rapl');
    else (None, 'none')."""
    samples = readings.samples
    if readings.gpu_indices and samples:
        slots = range(len(readings.gpu_indices))
        counted = [
            counter_delta(samples, lambda s, slot=slot: gpu_counter(s, slot), start, end)
            for slot in slots
        ]
        if all(millijoules is not None for millijoules in counted):
            return sum(m for m in counted if m is not None) / 1000.0, "nvml"
        total = 0.0
        for slot in slots:
            points = [(s.t_s, w) for s in samples if (w := s.power_w[slot]) is not None]
            joules = trace_energy([t for t, _ in points], [w for _, w in points], start, end)
            if joules is None:
                return None, "none"
            total += joules
        return total, "nvml_power"
    joules = counter_delta(samples, lambda s: s.cpu_energy_j, start, end)
    return (None, "none") if joules is None else (joules, "rapl")


def gpu_counter(sample: Sample, slot: int) -> float | None:
    readings = sample.gpu_energy_mj
    return readings[slot] if slot < len(readings) else None


def counter_delta(
    samples: list[Sample], read: Callable[[Sample], float | None], start: float, end: float
) -> float | None:
    """A cumulative counter's rise between `start` and `end`, read at every sample and
    interpolated at the edges; None when a sample lacks it or an edge is outside them."""
    totals = [value for s in samples if (value := read(s)) is not None]
    if len(samples) < 2 or len(totals) < len(samples):  # a gap: not whole
        return None
    times = [s.t_s for s in samples]
    at_start, at_end = value_at(times, totals, start), value_at(times, totals, end)
    if at_start is None or at_end is None:
        return None
    return at_end - at_start


def run_load(
    config: ExperimentConfig,
    server: ServerProcess,
    out_dir: Path,
    gpu_indices: list[int],
    generator: list[str] | None = None,
) -> ServerRun:
    """Drive `server` with GuideLLM per `config.load`; `generator` replaces the `guidellm`
    executable (a venv's path). A server that dies during the load fails the experiment."""
    load = config.load
    report = out_dir / REPORT_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    if loadgen.replays_arrivals(load):
        loadgen.write_trace(config, out_dir / loadgen.TRACE_FILE)
    argv = loadgen.guidellm_argv(config, server.base_url, config.model.path, report)
    if generator is not None:
        argv[0:1] = generator
    meter = EnergyMeter(gpu_indices, config.measurement.sample_interval_ms)
    meter_epoch = time.time()
    meter.start()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, env=generator_env()
        )
    except FileNotFoundError as exc:
        raise ExperimentError(
            f"{argv[0]} is not installed in this image: rebuild it with "
            "scripts/build-images.sh (docs/server-mode.md)"
        ) from exc
    finally:
        readings = meter.stop()
    if not server.alive():
        raise ExperimentError(f"the server died during the load: {server.cause()}")
    if done.returncode != 0 or not report.exists():
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ExperimentError(f"guidellm failed (exit {done.returncode}): {tail}")
    sent, name = loadgen.read_report(report, origin=meter_epoch)
    requests = loadgen.asked_requests(sent, load)
    definition = "concurrency" if load.max_concurrency is not None else "rate"
    window = steady_window(
        requests,
        definition,
        warmup_requests=load.warmup_requests,
        max_concurrency=load.max_concurrency,
        min_window_seconds=load.min_window_seconds,
        min_in_flight_fraction=load.min_in_flight_fraction,
    )
    energy, source = window_energy(readings, window.start_s, window.end_s)
    serving = serving_block(
        requests,
        window,
        load,
        energy_j=energy,
        server=" ".join(server.command[:2]),
        load_generator=name,
    )
    write_requests(out_dir, requests)
    warnings = [f"unstable window: {reason}" for reason in window.unstable_reasons]
    if len(requests) < load.num_requests:  # more rows unsent than a trace has spare
        warnings.append(f"the load generator sent {len(requests)} of {load.num_requests} requests")
    if energy is None:
        warnings.append(
            "no energy meter over the window (no GPU power trace, no RAPL): energy is null"
        )
    return ServerRun(requests, serving, readings, warnings, source)


def package_versions() -> dict[str, str]:
    """Versions of the installed server and load generator packages (none imported)."""
    found = {}
    for name in SERVER_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def server_result(
    config: ExperimentConfig,
    identity: Identity,
    run: ServerRun,
    device: str,
    timing: Timing,
) -> ExperimentResult:
    """The result of one server-mode experiment: the top-level blocks are the steady
    window's (tokens, rates, latencies, energy), `serving` has the rest; power and
    thermal cover the whole load."""
    serving, inside = run.serving, run.serving.window
    tokens = Tokens(
        requests=inside.requests_completed,
        input_tokens=sum(
            r.input_tokens
            for r in run.requests
            if r.end_s is not None and inside.start_s <= r.end_s <= inside.end_s
        ),
        output_tokens=inside.output_tokens,
    )
    _, power, thermal = build_energy(run.readings, None, tokens.output_tokens, tokens.requests)
    energy = Energy(source="none")
    if serving.energy_j is not None:  # the window's: NVML counters, power trace or RAPL
        on_gpu = run.energy_source in GPU_SOURCES
        energy = Energy(
            source=run.energy_source,
            gpu_energy_j=serving.energy_j if on_gpu else None,
            cpu_energy_j=None if on_gpu else serving.energy_j,
            total_energy_j=serving.energy_j,
            j_per_output_token=serving.j_per_output_token,
            j_per_request=serving.j_per_request,
        )
    result = ExperimentResult(
        identity=identity,
        config=config.model_dump(mode="json"),
        timing=timing,
        tokens=tokens,
        throughput=Throughput(
            output_tokens_per_s=serving.output_tokens_per_s,
            requests_per_s=serving.achieved_request_rate,
        ),
        latency=serving.e2e_latency,
        ttft=Ttft(**serving.ttft.model_dump(), definition="frontend_arrival"),
        itl=serving.itl,
        energy=energy,
        power=power,
        thermal=thermal,
        environment=collect_environment(device, package_versions(), run.readings.gpu_indices),
        foreign_gpu_processes=run.readings.foreign_processes,
        serving=serving,
    )
    warnings = [*run.warnings, *run.readings.warnings]
    result.warnings = list(dict.fromkeys(warnings))
    return result
