"""One experiment: load (or reuse) a model, warm up, measure a window, write result.json.

The steps are separate so that a long-lived worker (issue 6) can call `load_model`
once and `measure_experiment` + `write_result` many times; `run_experiment` is the
one-shot composition used by `lem experiment`. Nothing here imports an engine: the
backend module is imported by `load_backend` when a model is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llenergymeasure.config.models import ExperimentConfig, ModelSpec
from llenergymeasure.contracts.result import (
    Distribution,
    ExperimentResult,
    GpuKnob,
    Identity,
    Throughput,
    Timing,
    Tokens,
    Ttft,
)
from llenergymeasure.errors import ExperimentError, LemError
from llenergymeasure.files import atomic_write_text
from llenergymeasure.measure import nvml
from llenergymeasure.measure.baseline import GpuBaseline, idle_entries
from llenergymeasure.measure.energy import build_energy
from llenergymeasure.measure.environment import collect_environment
from llenergymeasure.measure.gpus import mig_warning, order_warning, visible_gpu_indices
from llenergymeasure.measure.window import EnergyMeter, WindowReadings
from llenergymeasure.runner.backends import import_backend, load_backend, not_installed_message
from llenergymeasure.runner.backends.base import LoadedBackend, RequestRecord
from llenergymeasure.runner.loadkey import load_key
from llenergymeasure.runner.prompts import cycle_prompts, load_prompts

RESULT_FILE = "result.json"
RESULT_MODE = 0o644
# NVML's energy counter updates about every 100 ms: below this the granularity shows.
RELIABLE_WINDOW_S = 5.0
MAX_CAUSE_CHARS = 400
ColdStartMethod = Literal["fresh_process", "unload", "restart"]
# Told each stage as it starts ("baseline", "warmup", "window") and "window_done" after it.
ProgressHook = Callable[[str], None]


@dataclass(frozen=True)
class RunIdentity:
    """Who asked for this run: given by the caller (options or LEM_* environment)."""

    exp_id: str | None = None
    campaign_name: str | None = None
    config_hash: str | None = None
    cycle: int | None = None
    host: str | None = None

    def for_config(self, config: ExperimentConfig) -> Identity:
        return Identity(
            exp_id=self.exp_id,
            campaign_name=self.campaign_name,
            config_name=config.config_name,
            config_hash=self.config_hash,
            cycle=self.cycle,
            backend=config.backend,
            host=self.host,
        )


@dataclass
class LoadedModel:
    """A loaded backend plus what the results say about its load.

    The first experiment measured with it reports `load_seconds` and its cold-start
    method; later ones report a reused model (load time 0).
    """

    backend: LoadedBackend
    load_key: str
    load_seconds: float
    cold_start_method: ColdStartMethod = "fresh_process"
    import_seconds: float = 0.0
    experiments_measured: int = 0


@dataclass(frozen=True)
class IdlePower:
    """Idle entries per GPU, measured (or read from the cache) before the model loaded."""

    gpu_indices: list[int]
    entries: list[GpuBaseline] | None
    seconds_spent: float


@dataclass
class WindowRun:
    """What happened inside the measurement window."""

    records: list[RequestRecord]
    repeats: int
    readings: WindowReadings
    warnings: list[str] = field(default_factory=list)


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    identity: RunIdentity,
    *,
    loaded: LoadedModel | None = None,
    baseline_cache: Path | None = None,
    gap_waited_seconds: float | None = None,
    gpu_knobs: list[dict[str, Any]] | None = None,
) -> ExperimentResult:
    """Measure `config` and write `out_dir/result.json`; failures are ExperimentError.

    With `loaded`, that model is used and kept; without, one is loaded and unloaded.
    Server mode runs in the service's worker only (it starts and keeps the server).
    """
    if config.load.mode == "server":
        raise ExperimentError(
            f"config {config.config_name!r}: load.mode 'server' runs in the service's "
            "`lem worker` (it starts the engine's server); this process measures offline "
            "batches only (docs/server-mode.md)"
        )
    own_model = loaded is None
    try:
        idle = idle_before_load(config, baseline_cache) if loaded is None else None
        model = load_model(config) if loaded is None else loaded
        try:
            result = measure_experiment(
                model,
                config,
                identity,
                baseline_cache=baseline_cache,
                gap_waited_seconds=gap_waited_seconds,
                gpu_knobs=gpu_knobs,
                idle=idle,
            )
        finally:
            if own_model:
                model.backend.unload()
    except LemError:
        raise
    except Exception as exc:
        raise ExperimentError(describe_failure(exc, config)) from exc
    result.timing.runner = "in_process"  # the worker calls measure_experiment itself
    write_result(out_dir, result)
    return result


def load_model(config: ExperimentConfig) -> LoadedModel:
    """Load the config's model with its backend; the engine import and the load are timed
    apart, the same way for every backend."""
    check_model_path(config.model)
    importing = time.perf_counter()
    module = import_backend(config.backend)
    started = time.perf_counter()
    try:
        backend = load_backend(config, module)
    except OSError as exc:  # missing files, no network for a hub id, unreadable weights
        raise ExperimentError(
            f"cannot load model {config.model.path} ({config.backend}): {_one_line(str(exc))}"
        ) from exc
    return LoadedModel(
        backend=backend,
        load_key=load_key(config),
        load_seconds=time.perf_counter() - started,
        import_seconds=started - importing,
    )


def measure_experiment(
    loaded: LoadedModel,
    config: ExperimentConfig,
    identity: RunIdentity,
    *,
    baseline_cache: Path | None = None,
    gap_waited_seconds: float | None = None,
    gpu_knobs: list[dict[str, Any]] | None = None,
    progress: ProgressHook | None = None,
    idle: IdlePower | None = None,
) -> ExperimentResult:
    """Baseline, warmup and measurement window on an already loaded model.

    `idle` is what `idle_before_load` measured before this model was loaded; without
    it (a reused model) only an idle value cached earlier is used.
    """
    report = progress or (lambda stage: None)
    if loaded.load_key != load_key(config):
        raise ExperimentError(
            f"the loaded model (load key {loaded.load_key}) does not serve config "
            f"{config.config_name!r} (load key {load_key(config)})"
        )
    started_at, started = _utc_now(), time.perf_counter()
    prompts = load_prompts(config.dataset)
    gpu_indices, gpu_warnings = experiment_gpus(config, loaded.backend.device)
    report("baseline")
    idle_used, baseline_warnings = loaded_idle_power(gpu_indices, config, baseline_cache, idle)
    gpu_warnings.extend(baseline_warnings)
    report("warmup")
    warmup_seconds = warm_up(loaded.backend, prompts, config)
    report("window")
    window = run_window(loaded.backend, prompts, config, gpu_indices)
    report("window_done")
    first_use = loaded.experiments_measured == 0
    loaded.experiments_measured += 1
    # the first use also pays for the engine import, the load and the idle baseline before it
    idle_s = idle.seconds_spent if idle else 0.0
    setup_s = loaded.import_seconds + loaded.load_seconds + idle_s if first_use else 0.0
    timing = Timing(
        started_at=started_at,
        finished_at=_utc_now(),
        load_seconds=loaded.load_seconds if first_use else 0.0,
        import_seconds=loaded.import_seconds if first_use else 0.0,
        model_reused=not first_use,
        cold_start_method=loaded.cold_start_method if first_use else None,
        warmup_seconds=warmup_seconds,
        window_seconds=window.readings.duration_s,
        window_repeats=window.repeats,
        total_seconds=time.perf_counter() - started + setup_s,
        gap_waited_seconds=gap_waited_seconds,
    )
    result = build_result(
        config, identity, loaded.backend, window, power_of(idle_used), timing, gpu_warnings
    )
    if idle_used is not None and result.energy.idle_baseline_power_w_per_gpu is not None:
        now = time.time()
        result.energy.idle_baseline_conditions = [entry.conditions(now) for entry in idle_used]
        warm = [entry.index for entry in idle_used if entry.settled is False]
        if warm:
            result.warnings.append(
                f"idle baseline of GPU(s) {warm} was measured when the thermal wait hit its "
                "cap, not back near idle: it may be high, idle-adjusted energy low"
            )
    result.gpu_knobs = [GpuKnob.model_validate(knob) for knob in gpu_knobs or []]
    return result


def power_of(entries: list[GpuBaseline] | None) -> list[float] | None:
    return None if entries is None else [entry.power_w for entry in entries]


def idle_before_load(
    config: ExperimentConfig, baseline_cache: Path | None, progress: ProgressHook | None = None
) -> IdlePower | None:
    """Idle power of the GPUs `config` will run on, taken while no model is loaded (the
    only time a re-check or a new measurement may be stored as idle); None without GPUs."""
    gpu_indices, _ = experiment_gpus(config, "cuda")
    if not gpu_indices:
        return None
    if progress is not None:
        progress("baseline")
    started = time.perf_counter()
    entries = idle_entries(gpu_indices, config.measurement.baseline_seconds, baseline_cache)
    return IdlePower(gpu_indices, entries, time.perf_counter() - started)


def loaded_idle_power(
    gpu_indices: list[int],
    config: ExperimentConfig,
    baseline_cache: Path | None,
    idle: IdlePower | None,
) -> tuple[list[GpuBaseline] | None, list[str]]:
    """The idle entries for the window on `gpu_indices`, and warnings. The model is loaded
    now: use what was measured before the load, else an idle value cached earlier."""
    if not gpu_indices:
        return None, []
    if idle is not None and idle.gpu_indices == gpu_indices:
        return idle.entries, []
    seconds = config.measurement.baseline_seconds
    entries = idle_entries(gpu_indices, seconds, baseline_cache, gpu_idle=False)
    if entries is not None:
        return entries, []
    return None, [
        f"no idle baseline: none cached for GPU(s) {gpu_indices} from an idle moment, and "
        "the loaded model keeps them busy (`lem baseline` or the next model load measures "
        "it): idle-adjusted energy is null"
    ]


def experiment_gpus(config: ExperimentConfig, device: str) -> tuple[list[int], list[str]]:
    """NVML indices of the GPUs this experiment runs on (none on CPU), and warnings.

    Engines use the first visible GPUs: one for PyTorch, tensor (x pipeline) parallel
    size for vLLM and TensorRT-LLM. Other visible GPUs are not charged to it.
    """
    if device != "cuda":
        return [], []
    nvml.refresh()  # a driver that was not ready when this process started may be now
    wanted = gpus_used(config)
    visible = visible_gpu_indices()
    warnings = [w for w in (order_warning(), mig_warning(visible)) if w is not None and visible]
    if len(visible) < wanted:
        warnings.append(f"the config uses {wanted} GPUs, only {len(visible)} visible to NVML")
        return visible, warnings
    return visible[:wanted], warnings


def gpus_used(config: ExperimentConfig) -> int:
    if config.vllm is not None:
        return config.vllm.tensor_parallel_size
    if config.tensorrt is not None:
        return config.tensorrt.tensor_parallel_size * config.tensorrt.pipeline_parallel_size
    return 1


def warm_up(backend: LoadedBackend, prompts: list[str], config: ExperimentConfig) -> float:
    """Run `warmup_prompts` prompts outside the window; returns the seconds spent."""
    count = config.measurement.warmup_prompts
    started = time.perf_counter()
    if count > 0:
        backend.generate(cycle_prompts(prompts, count), config)
        backend.synchronize()
    return time.perf_counter() - started


def run_window(
    backend: LoadedBackend, prompts: list[str], config: ExperimentConfig, gpu_indices: list[int]
) -> WindowRun:
    """Repeat the prompt set until `min_window_seconds` (at most `max_window_repeats` times)."""
    settings = config.measurement
    meter = EnergyMeter(gpu_indices, settings.sample_interval_ms)
    records: list[RequestRecord] = []
    warnings: list[str] = []
    backend.synchronize()
    meter.start()
    try:
        started, repeats = time.perf_counter(), 0
        while True:
            outcome = backend.generate(prompts, config)
            records.extend(outcome.records)
            warnings.extend(outcome.warnings)
            repeats += 1
            elapsed = time.perf_counter() - started
            if elapsed >= settings.min_window_seconds or repeats >= settings.max_window_repeats:
                break
        backend.synchronize()
    except BaseException:
        meter.stop()  # the sampler thread must not outlive a failed window
        raise
    readings = meter.stop()
    if elapsed < settings.min_window_seconds:
        warnings.append(
            f"window stopped at max_window_repeats={settings.max_window_repeats} after "
            f"{elapsed:.2f} s, short of min_window_seconds={settings.min_window_seconds}"
        )
    return WindowRun(records=records, repeats=repeats, readings=readings, warnings=warnings)


def build_result(
    config: ExperimentConfig,
    identity: RunIdentity,
    backend: LoadedBackend,
    window: WindowRun,
    baseline_w_per_gpu: list[float] | None,
    timing: Timing,
    extra_warnings: Sequence[str] = (),
) -> ExperimentResult:
    records, readings = window.records, window.readings
    tokens = Tokens(
        requests=len(records),
        input_tokens=sum(r.input_tokens for r in records),
        output_tokens=sum(r.output_tokens for r in records),
    )
    energy, power, thermal = build_energy(
        readings, baseline_w_per_gpu, tokens.output_tokens, tokens.requests
    )
    result = ExperimentResult(
        identity=identity.for_config(config),
        config=config.model_dump(mode="json"),
        timing=timing,
        tokens=tokens,
        throughput=Throughput(
            output_tokens_per_s=tokens.output_tokens / readings.duration_s,
            requests_per_s=tokens.requests / readings.duration_s,
        ),
        latency=distribution([r.latency_s for r in records if r.latency_s is not None]),
        ttft=Ttft(
            **distribution([r.ttft_s for r in records if r.ttft_s is not None]).model_dump(),
            definition=getattr(backend, "ttft_definition", None),
        ),
        itl=distribution([gap for r in records for gap in r.itl_s]),
        energy=energy,
        power=power,
        thermal=thermal,
        environment=collect_environment(backend.device, backend.versions(), readings.gpu_indices),
        foreign_gpu_processes=readings.foreign_processes,
    )
    warnings = [*extra_warnings, *window.warnings, *readings.warnings, *_result_warnings(result)]
    result.warnings = list(dict.fromkeys(warnings))
    return result


def _result_warnings(result: ExperimentResult) -> list[str]:
    warnings = []
    window_s = result.timing.window_seconds
    if result.energy.source == "none":
        warnings.append("no energy counter readable (no NVML GPU energy, no RAPL): energy is null")
    elif window_s < RELIABLE_WINDOW_S:
        warnings.append(
            f"window of {window_s:.2f} s is shorter than {RELIABLE_WINDOW_S:.0f} s: "
            "energy counter granularity is significant"
        )
    if result.thermal.throttled:
        reasons = ", ".join(result.thermal.throttle_reasons)
        warnings.append(f"GPU throttled during the window ({reasons})")
    owners = [process.get("owner") for process in result.foreign_gpu_processes]
    if owners.count("foreign"):
        warnings.append(f"{owners.count('foreign')} other GPU process(es) seen during the window")
    if owners.count("unknown"):
        warnings.append(
            f"{owners.count('unknown')} GPU process(es) not attributable during the window "
            "(NVML gives host PIDs, unknown in this PID namespace: run with `pid: host` to "
            "tell the engine's own processes from others)"
        )
    return warnings


def distribution(values: Sequence[float]) -> Distribution:
    """Mean and p50/p90/p99 (linear interpolation) in seconds; all None when empty."""
    if not values:
        return Distribution()
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99])
    return Distribution(
        mean=float(np.mean(values)), p50=float(p50), p90=float(p90), p99=float(p99), n=len(values)
    )


def write_result(out_dir: Path, result: ExperimentResult) -> Path:
    """Write `out_dir/result.json` atomically: temp file, fsync, os.replace, fsync the dir."""
    target = out_dir / RESULT_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, result.model_dump_json(indent=2), RESULT_MODE)
    except OSError as exc:
        raise ExperimentError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def check_model_path(spec: ModelSpec) -> None:
    """A model path that looks local (/, ./, ../, ~) must exist; others may be hub ids."""
    if spec.path.startswith(("/", "./", "../", "~")):
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise ExperimentError(f"model path {spec.path} does not exist")


def describe_failure(exc: BaseException, config: ExperimentConfig) -> str:
    """A one-line cause for an unexpected exception, naming what the user can act on."""
    detail = _one_line(str(exc)) or type(exc).__name__
    if is_out_of_memory(exc):
        return (
            f"out of memory running {config.model.path} ({config.backend}, {config.precision}): "
            f"{detail}"
        )
    if isinstance(exc, ModuleNotFoundError):
        return not_installed_message(config.backend, exc.name)
    return f"{type(exc).__name__}: {detail}"


def is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError and engine errors, matched without importing torch
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "out of memory" in str(exc).lower()
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_CAUSE_CHARS else line[: MAX_CAUSE_CHARS - 3] + "..."


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()
