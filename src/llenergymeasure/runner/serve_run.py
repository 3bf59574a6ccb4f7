"""One server-mode experiment against a server that is up: load, window, result.

The energy meter runs from before the load generator starts to after it ends; the
requests' times are put on the meter's clock, the steady window is found in them
(measure/steady.py), and the window's energy is the power trace integrated between its
edges (per GPU, summed). Without a GPU power trace (a CPU host) energy is null: RAPL's
counters are read at the meter's edges only, not at the window's.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.contracts.result import Serving
from llenergymeasure.errors import ExperimentError
from llenergymeasure.measure.steady import ServedRequest, steady_window, trace_energy
from llenergymeasure.measure.window import EnergyMeter, WindowReadings
from llenergymeasure.runner import loadgen
from llenergymeasure.runner.servers import ServerProcess
from llenergymeasure.runner.serving import serving_block, write_requests

REPORT_FILE = "guidellm-report.json"


@dataclass
class ServerRun:
    requests: list[ServedRequest]
    serving: Serving
    readings: WindowReadings
    warnings: list[str]


def window_energy(readings: WindowReadings, start: float, end: float) -> float | None:
    """Joules of the run's GPUs between `start` and `end` (meter clock), from the trace."""
    if not readings.gpu_indices or not readings.samples:
        return None
    total = 0.0
    for slot in range(len(readings.gpu_indices)):
        points = [(s.t_s, w) for s in readings.samples if (w := s.power_w[slot]) is not None]
        joules = trace_energy([t for t, _ in points], [w for _, w in points], start, end)
        if joules is None:
            return None
        total += joules
    return total


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
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        readings = meter.stop()
    if not server.alive():
        raise ExperimentError(f"the server died during the load: {server.cause()}")
    if done.returncode != 0 or not report.exists():
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ExperimentError(f"guidellm failed (exit {done.returncode}): {tail}")
    requests, name = loadgen.read_report(report, origin=meter_epoch)
    definition = "concurrency" if load.max_concurrency is not None else "rate"
    window = steady_window(
        requests,
        definition,
        warmup_requests=load.warmup_requests,
        max_concurrency=load.max_concurrency,
        min_window_seconds=load.min_window_seconds,
        min_in_flight_fraction=load.min_in_flight_fraction,
    )
    energy = window_energy(readings, window.start_s, window.end_s)
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
    if energy is None:
        warnings.append("no energy meter over the window (no GPU power trace): energy is null")
    return ServerRun(requests, serving, readings, warnings)
