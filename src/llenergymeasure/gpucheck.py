"""The checks of scripts/gpu-check.sh: is this GPU host measured correctly?

The script sets up an environment, runs experiments (in a venv, in the built image
through compose, with vLLM when importable) and hands their result.json files to
`python -m llenergymeasure.gpucheck report`, which applies the thresholds below and
prints one JSON report. See docs/gpu.md.

Standard library only, on purpose: the script runs `probe` and `report` with
PYTHONPATH=src before (or without) installing the package's dependencies, so a
machine without a GPU or with a broken setup still gets its JSON report. Results are
read as plain JSON in the documented schema (contracts/result.py), not through pydantic.

    python -m llenergymeasure.gpucheck probe
    python -m llenergymeasure.gpucheck knobs --state-file FILE   (needs nvidia-ml-py, root)
    python -m llenergymeasure.gpucheck config BACKEND MODEL_PATH WINDOW_S
    python -m llenergymeasure.gpucheck render-compose TEMPLATE WORK_DIR IMAGE
    python -m llenergymeasure.gpucheck report --probe FILE [--work DIR] [--run LABEL=RESULT_JSON]...
        [--skip LABEL=REASON]... [--error LABEL=REASON]... [--prepared STEP=DETAIL]...

`report` exits 0 on `pass` (every run ran and every check passed), 2 on `partial`
(nothing failed, something was skipped), 1 on `fail`, 3 on `no_gpu`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from llenergymeasure import __version__
from llenergymeasure.dispatch.compose_file import render_compose

# Energy counter vs power samples integrated over the window: NVML's power reading is
# averaged over ~1 s on recent GPUs, so a 20 s window agrees to a few percent.
ENERGY_TOLERANCE = 0.15
# An idle datacenter GPU draws tens of watts; below this NVML reports nonsense.
IDLE_MIN_W = 10.0
EXIT_PASS, EXIT_FAIL, EXIT_PARTIAL, EXIT_NO_GPU = 0, 1, 2, 3
# energy.source values that measured no GPU energy at all.
NO_GPU_ENERGY = ("none", "rapl")

Status = Literal["pass", "fail", "skip"]
Verdict = Literal["pass", "partial", "fail", "no_gpu"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One experiment of the check (or why it did not run)."""

    status: Status
    reason: str | None = None
    result: str | None = None
    checks: list[Check] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _check(name: str, ok: bool, detail: str, **values: Any) -> Check:
    return Check(name, "pass" if ok else "fail", detail, values)


def integrate_power(times_s: list[float], watts: list[float], window_s: float) -> float:
    """Joules under the power samples: trapezoids between samples, the first and last
    sample's power held to the window's edges (sampling starts and stops inside it)."""
    points = sorted(zip(times_s, watts, strict=True))
    energy = sum((t2 - t1) * (w1 + w2) / 2 for (t1, w1), (t2, w2) in pairwise(points))
    energy += max(points[0][0], 0.0) * points[0][1]
    energy += max(window_s - points[-1][0], 0.0) * points[-1][1]
    return energy


def check_cuda(result: dict[str, Any]) -> Check:
    device = result["environment"].get("device")
    return _check("ran_on_cuda", device == "cuda", f"environment.device is {device!r}")


def check_energy_counter(result: dict[str, Any]) -> Check:
    """The NVML energy counter's delta against the integrated power samples."""
    name = "energy_counter_vs_power"
    energy, power = result["energy"], result["power"]
    source = energy.get("source")
    if source in NO_GPU_ENERGY:
        return _check(name, False, f"no GPU energy measured (energy.source {source!r})")
    if source != "nvml":
        return Check(name, "skip", f"energy.source {source!r}: no energy counter to compare")
    counter_j = energy.get("gpu_energy_j")
    times, watts = power.get("samples_t") or [], power.get("samples_w") or []
    if not counter_j or len(times) < 2 or len(times) != len(watts):
        detail = f"counter {counter_j!r} J, {len(times)} power samples: cannot compare"
        return _check(name, False, detail)
    window_s = result["timing"]["window_seconds"]
    integrated_j = integrate_power(times, watts, window_s)
    deviation = abs(counter_j - integrated_j) / counter_j
    return _check(
        name,
        deviation <= ENERGY_TOLERANCE,
        f"counter {counter_j:.1f} J vs integrated power {integrated_j:.1f} J over "
        f"{window_s:.1f} s: {deviation:.1%} apart (limit {ENERGY_TOLERANCE:.0%})",
        counter_j=counter_j,
        integrated_j=round(integrated_j, 3),
        deviation=round(deviation, 4),
        samples=len(times),
    )


def check_idle_baseline(result: dict[str, Any]) -> Check:
    """Each GPU's idle power above IDLE_MIN_W and below its power limit."""
    name = "idle_baseline"
    energy = result["energy"]
    per_gpu = energy.get("idle_baseline_power_w_per_gpu")
    if per_gpu is None and energy.get("idle_baseline_power_w") is not None:
        per_gpu = [energy["idle_baseline_power_w"]]
    if not per_gpu:
        return _check(name, False, "no idle baseline in the result")
    limits = result["environment"].get("power_limit_w") or []
    if len(limits) != len(per_gpu):
        limits = [max(limits)] * len(per_gpu) if limits else []
    if not limits:
        return _check(name, False, "no power limit in the result to compare with", idle_w=per_gpu)
    bad = [
        f"GPU {i}: {idle:.1f} W not in ({IDLE_MIN_W:.0f} W, {limit:.0f} W)"
        for i, (idle, limit) in enumerate(zip(per_gpu, limits, strict=True))
        if not IDLE_MIN_W < idle < limit
    ]
    detail = "; ".join(bad) or f"idle {per_gpu} W, limits {limits} W"
    return _check(name, not bad, detail, idle_w=per_gpu, power_limit_w=limits)


def check_latency_counts(result: dict[str, Any]) -> Check:
    """Per-request timings exist: TTFT and ITL were measured, not left empty."""
    ttft_n, itl_n = result["ttft"].get("n", 0), result["itl"].get("n", 0)
    return _check(
        "ttft_itl_counts",
        ttft_n > 0 and itl_n > 0,
        f"ttft.n {ttft_n}, itl.n {itl_n} (both must be > 0)",
        ttft_n=ttft_n,
        itl_n=itl_n,
    )


RESULT_CHECKS = (check_cuda, check_energy_counter, check_idle_baseline, check_latency_counts)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth recording in an issue note."""
    env, energy, timing = result["environment"], result["energy"], result["timing"]
    return {
        "backend": result["identity"].get("backend"),
        "gpu_name": env.get("gpu_name"),
        "gpu_count": env.get("gpu_count"),
        "driver_version": env.get("driver_version"),
        "versions": env.get("versions"),
        "window_seconds": timing.get("window_seconds"),
        "output_tokens": result["tokens"].get("output_tokens"),
        "gpu_energy_j": energy.get("gpu_energy_j"),
        "j_per_output_token": energy.get("j_per_output_token"),
        "mean_power_w": result["power"].get("mean_w"),
        "ttft_mean_s": result["ttft"].get("mean"),
        "itl_mean_s": result["itl"].get("mean"),
        "warnings": result.get("warnings", []),
    }


def check_result(result: dict[str, Any], path: str | None = None) -> Run:
    checks = [check(result) for check in RESULT_CHECKS]
    failed = any(check.status == "fail" for check in checks)
    return Run("fail" if failed else "pass", None, path, checks, summarize(result))


def load_run(path: Path) -> Run:
    """The checks of one result.json; an unreadable or malformed one is a failed run."""
    try:
        return check_result(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Run("fail", f"cannot check {path}: {type(exc).__name__}: {exc}", str(path))


def skipped_steps(runs: dict[str, Run]) -> list[str]:
    """What did not run: a whole run (no Docker, no vLLM) or one check of a run."""
    skipped = [f"{label}: {run.reason}" for label, run in runs.items() if run.status == "skip"]
    skipped += [
        f"{label}.{check.name}: {check.detail}"
        for label, run in runs.items()
        for check in run.checks
        if check.status == "skip"
    ]
    return skipped


def verdict(probe: dict[str, Any], runs: dict[str, Run]) -> Verdict:
    """`pass` only when every run ran and every check passed; `partial` when nothing
    failed but something was skipped (so not everything is proven); `no_gpu` when the
    probe found none; `fail` otherwise, including when nothing ran at all."""
    statuses = [run.status for run in runs.values()]
    if probe.get("no_gpu"):
        return "no_gpu"
    if "fail" in statuses or "pass" not in statuses or probe.get("error"):
        return "fail"
    return "partial" if skipped_steps(runs) else "pass"


def assemble(
    probe: dict[str, Any], runs: dict[str, Run], prepared: dict[str, str] | None = None
) -> dict[str, Any]:
    """The report; `prepared` names the preparation steps that passed (before the probe)."""
    return {
        "report": "lem gpu-check",
        "format": 2,
        "status": verdict(probe, runs),
        "reason": probe.get("no_gpu") or probe.get("error"),
        "host": socket.gethostname(),
        "lem_version": __version__,
        "thresholds": {"energy_tolerance": ENERGY_TOLERANCE, "idle_min_w": IDLE_MIN_W},
        "preparation": prepared or {},
        "skipped": skipped_steps(runs),
        "driver_version": probe.get("driver_version"),
        "gpus": probe.get("gpus", []),
        "runs": {label: asdict(run) for label, run in runs.items()},
    }


def exit_code(report: dict[str, Any]) -> int:
    codes = {"pass": EXIT_PASS, "partial": EXIT_PARTIAL, "no_gpu": EXIT_NO_GPU}
    return codes.get(report["status"], EXIT_FAIL)


def knob_step(state_file: Path, index: int = 0) -> Run:
    """Lock GPU `index`'s SM clock mid-range, read it back, reset it, read it back
    (docs/knobs.md): the campaign's GPU knobs work on this host. Needs nvidia-ml-py and root;
    without root the step is skipped with the reason."""
    from llenergymeasure.dispatch import knobs
    from llenergymeasure.measure import nvml

    try:
        knobs.check_gpu(index)
        memory = max(nvml.supported_memory_clocks(index))
        clocks = sorted(nvml.supported_graphics_clocks(index, memory))
        target = clocks[len(clocks) // 2]
        [record] = knobs.apply([index], {"sm_clock_mhz": target}, state_file)
        restored = knobs.restore(state_file)
        after = nvml.current_clock_mhz(index, "sm")
    except (knobs.KnobError, nvml.NvmlCallError) as exc:
        status: Status = "skip" if "NO_PERMISSION" in str(exc) else "fail"
        return Run(status, f"GPU knobs: {exc}")
    locked = record.applied is not None and abs(record.applied - target) <= 0.05 * target
    return Run(
        "pass" if locked and restored and not state_file.exists() else "fail",
        checks=[
            _check(
                "knob_lock_read_back",
                locked,
                f"SM clock locked at {target} MHz, NVML reads {record.applied} MHz",
                asked=target,
                applied=record.applied,
                supported=[clocks[0], clocks[-1]],
            ),
            _check(
                "knob_reset",
                bool(restored) and not state_file.exists(),
                f"lock reset ({'; '.join(restored)}); SM clock now {after} MHz",
                after_reset=after,
            ),
        ],
    )


def load_knob_run(path: Path) -> Run:
    data = json.loads(path.read_text(encoding="utf-8"))
    checks = [Check(**check) for check in data.pop("checks", [])]
    return Run(**data, checks=checks)


def probe() -> dict[str, Any]:
    """The GPUs NVML sees; `no_gpu` says why there are none, `error` what is broken."""
    try:
        import pynvml
    except ImportError:
        if not Path("/dev/nvidiactl").exists():
            return {"no_gpu": "no NVIDIA driver (/dev/nvidiactl absent, nvidia-ml-py missing)"}
        return {"error": "nvidia-ml-py (pynvml) is not installed for this Python"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"no_gpu": f"NVML cannot start: {exc}"}
    try:
        gpus = [_gpu(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
        driver = pynvml.nvmlSystemGetDriverVersion()
    except pynvml.NVMLError as exc:
        return {"error": f"NVML query failed: {exc}"}
    finally:
        pynvml.nvmlShutdown()
    if not gpus:
        return {"no_gpu": "NVML sees no GPU", "driver_version": driver}
    return {"gpus": gpus, "driver_version": driver}


def _gpu(pynvml: Any, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return {
        "index": index,
        "name": pynvml.nvmlDeviceGetName(handle),
        "uuid": pynvml.nvmlDeviceGetUUID(handle),
        "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
    }


def experiment_config(backend: str, model_path: str, window_s: float) -> dict[str, Any]:
    """A short experiment on the tiny model: ~`window_s` of measurement plus a 10 s baseline."""
    sections: dict[str, dict[str, Any]] = {
        "pytorch": {"batch_size": 4},
        # Little memory and no CUDA graphs: the tiny model loads in seconds.
        "vllm": {"gpu_memory_utilization": 0.3, "enforce_eager": True, "max_model_len": 512},
    }
    return {
        "config_name": f"gpu-check-{backend}",
        "backend": backend,
        "model": {"path": model_path},
        "precision": "float16",
        "decoder": {"max_new_tokens": 32, "temperature": 0.0},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 16},
        "measurement": {
            "warmup_prompts": 4,
            "min_window_seconds": window_s,
            "baseline_seconds": 10,
        },
        backend: sections[backend],
    }


COMPOSE_PROJECT = "lem-gpu-check"


def compose_variables(work: Path, image: str) -> dict[str, Any]:
    """The template's variables for one GPU pytorch service on the check's work dir."""
    return {
        "lem_compose_project": COMPOSE_PROJECT,
        "lem_services": {"pytorch": "pytorch"},
        "lem_images": {"pytorch": image},
        "lem_state_dir": str(work / "state"),
        "lem_models_dir": str(work / "models"),
        "lem_gpu": True,
    }


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        label, sep, text = value.partition("=")
        if not sep:
            raise SystemExit(f"{option} expects LABEL=VALUE, got {value!r}")
        pairs[label] = text
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llenergymeasure.gpucheck")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("probe")
    knob = commands.add_parser("knobs")
    knob.add_argument("--state-file", type=Path, required=True)
    config = commands.add_parser("config")
    config.add_argument("backend", choices=["pytorch", "vllm"])
    config.add_argument("model_path")
    config.add_argument("window_s", type=float)
    compose = commands.add_parser("render-compose")
    compose.add_argument("template", type=Path)
    compose.add_argument("work", type=Path)
    compose.add_argument("image")
    report = commands.add_parser("report")
    report.add_argument("--probe", type=Path, required=True)
    report.add_argument("--work", help="Where the script left models, results and logs.")
    report.add_argument("--run", action="append", default=[])
    report.add_argument("--skip", action="append", default=[])
    report.add_argument("--error", action="append", default=[])
    report.add_argument("--prepared", action="append", default=[])
    report.add_argument("--knobs", type=Path, help="The `knobs` step's JSON, when it ran.")
    args = parser.parse_args(argv)

    if args.command == "probe":
        print(json.dumps(probe()))
    elif args.command == "knobs":
        print(json.dumps(asdict(knob_step(args.state_file))))
    elif args.command == "config":
        print(json.dumps(experiment_config(args.backend, args.model_path, args.window_s)))
    elif args.command == "render-compose":
        variables = compose_variables(args.work, args.image)
        sys.stdout.write(render_compose(args.template, variables))
    else:
        runs = {label: load_run(Path(path)) for label, path in _pairs(args.run, "--run").items()}
        runs |= {label: Run("skip", why) for label, why in _pairs(args.skip, "--skip").items()}
        runs |= {label: Run("fail", why) for label, why in _pairs(args.error, "--error").items()}
        if args.knobs is not None:
            runs["knobs"] = load_knob_run(args.knobs)
        probed = json.loads(args.probe.read_text(encoding="utf-8"))
        prepared = _pairs(args.prepared, "--prepared")
        result = assemble(probed, runs, prepared) | {"work_dir": args.work}
        print(json.dumps(result, indent=2))
        return exit_code(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
