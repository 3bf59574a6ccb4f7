"""Commands: `lem experiment` (one measured run), `lem worker` (keeps models loaded)
and `lem model tiny` (a test model).

Engines are imported only when an experiment loads its backend, and torch only when
the backend or the tiny model needs it: `import llenergymeasure.cli` stays light, and
`lem experiment` talking to a worker never imports them (runner/client.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from llenergymeasure.commands.common import fail, reports_errors
from llenergymeasure.config.loader import load_experiment
from llenergymeasure.config.models import BACKENDS, ExperimentConfig
from llenergymeasure.contracts.result import ExperimentResult, GpuKnob
from llenergymeasure.contracts.wire import (
    SOCKET_ENV,
    Done,
    Failed,
    NeedsRestart,
    Progress,
    RequestIdentity,
    RunRequest,
    socket_path,
)
from llenergymeasure.runner.client import (
    EXIT_NEEDS_RESTART,
    NoWorker,
    run_on_worker,
    run_request,
    worker_status,
)
from llenergymeasure.runner.tiny_model import TinyModelSpec

TINY_DEFAULTS = TinyModelSpec()

STATE_RESULTS_DIR = "results"
BASELINE_FILE = "baseline.json"
SOCKET_HELP = f"Worker socket. Default: ${SOCKET_ENV}, else /run/lem/worker.sock."


def experiment(
    config_file: Path = typer.Argument(
        ..., help="ExperimentConfig file (YAML or JSON).", show_default=False
    ),
    out: Path = typer.Option(
        ..., "--out", help="Directory for result.json (created).", show_default=False
    ),
    exp_id: str | None = typer.Option(
        None, "--exp-id", envvar="LEM_EXP_ID", help="Experiment id (campaign__config__cNN)."
    ),
    config_hash: str | None = typer.Option(
        None, "--config-hash", envvar="LEM_CONFIG_HASH", help="Hash of the resolved config."
    ),
    cycle: int | None = typer.Option(
        None, "--cycle", min=1, envvar="LEM_CYCLE", help="Cycle number, from 1."
    ),
    campaign: str | None = typer.Option(
        None, "--campaign", envvar="LEM_CAMPAIGN", help="Campaign name."
    ),
    host: str | None = typer.Option(
        None, "--host", envvar="LEM_HOST", help="Inventory host or lane."
    ),
    baseline_cache: Path | None = typer.Option(
        None,
        "--baseline-cache",
        envvar="LEM_BASELINE_CACHE",
        help="Idle-baseline cache file. Default: STATE/baseline.json when --out is "
        "STATE/results/EXP_ID (the host state layout); otherwise measured, not cached.",
    ),
    cold_start: bool = typer.Option(
        False,
        "--cold-start",
        help="Load the model from scratch: the worker unloads it first and checks GPU memory "
        f"came back (exit {EXIT_NEEDS_RESTART} when only a restart can do it). A run "
        "without a worker is always cold.",
    ),
    gap_waited: float | None = typer.Option(
        None, "--gap-waited", min=0.0, help="Seconds of gap waited before this experiment."
    ),
    gpu_knobs: str | None = typer.Option(
        None,
        "--gpu-knobs",
        help="JSON list of the GPU knobs the host set (asked, applied, supported range), "
        "recorded in the result (docs/knobs.md).",
    ),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Run in this process even when a worker is listening."
    ),
    require_worker: bool = typer.Option(
        False,
        "--require-worker",
        help="Fail when no worker answers instead of running in this process (campaigns: "
        "a cold in-process run must not mix with the warm worker's).",
    ),
    worker_socket: Path | None = typer.Option(
        None, "--worker-socket", help=SOCKET_HELP, show_default=False
    ),
) -> None:
    """Run one experiment: load the model, warm up, measure a window, write OUT/result.json.

    When a `lem worker` listens on its socket, the experiment runs there (the model
    stays loaded between experiments sharing a load key) and its progress is printed
    on stderr; otherwise it runs in this process (cold; recorded as `timing.runner:
    in_process`), or fails with --require-worker. Identity options (or LEM_EXP_ID,
    LEM_CONFIG_HASH, LEM_CYCLE, LEM_CAMPAIGN, LEM_HOST) are copied into the result.
    Exits 0 with a one-line summary, 75 when the worker asks for a service restart
    (a cold start it could not make), or 2 with `error: <cause>` on stderr.

    Example: lem experiment configs/tiny.yml --out results/tiny --exp-id demo__tiny__c01
    """
    if no_worker and require_worker:
        raise fail("--no-worker and --require-worker contradict each other: choose one")
    config = load_experiment(config_file)
    knobs = parse_gpu_knobs(gpu_knobs)
    identity = RequestIdentity(
        exp_id=exp_id, campaign_name=campaign, config_hash=config_hash, cycle=cycle, host=host
    )
    cache = baseline_cache if baseline_cache is not None else default_baseline_cache(out)
    result = None
    if not no_worker:
        request = run_request(
            config,
            config_file,
            out,
            identity,
            cold_start=cold_start,
            baseline_cache=cache,
            gap_waited_seconds=gap_waited,
            gpu_knobs=knobs,
        )
        result = run_through_worker(socket_path(worker_socket), request, require_worker)
    if result is None:
        result = run_in_process(config, out, identity, cache, gap_waited, knobs)
    typer.echo(summary_line(result, out))


def run_through_worker(
    path: Path, request: RunRequest, require_worker: bool = False
) -> ExperimentResult | None:
    """The result the worker at `path` wrote; None when no worker listens there (an
    error instead with `require_worker`)."""
    try:
        reply = run_on_worker(path, request, print_progress)
    except NoWorker as exc:
        if require_worker:
            raise fail(
                f"{exc}: --require-worker: not running it in this process (a cold run "
                "would mix with the worker's warm ones); start the service's worker, or "
                "run with --no-worker on purpose"
            ) from None
        if path.exists():  # a stale socket file: worth saying why the worker is not used
            print(f"lem: {exc}: running in this process", file=sys.stderr)
        return None  # recorded in the result: timing.runner is "in_process"
    return worker_result(reply)


def run_in_process(
    config: ExperimentConfig,
    out: Path,
    identity: RequestIdentity,
    baseline_cache: Path | None,
    gap_waited: float | None,
    gpu_knobs: list[dict[str, Any]] | None = None,
) -> ExperimentResult:
    """Load, measure, unload in this process: a fresh process is always a cold start."""
    from llenergymeasure.runner.experiment import RunIdentity, run_experiment

    return run_experiment(
        config,
        out,
        RunIdentity(**identity.model_dump()),
        baseline_cache=baseline_cache,
        gap_waited_seconds=gap_waited,
        gpu_knobs=gpu_knobs,
    )


def parse_gpu_knobs(text: str | None) -> list[dict[str, Any]]:
    """--gpu-knobs: a JSON list of GpuKnob records; an error naming the option otherwise."""
    if not text:
        return []
    try:
        knobs = [GpuKnob.model_validate(knob).model_dump() for knob in json.loads(text)]
    except (ValueError, TypeError) as exc:
        raise fail(f"--gpu-knobs {text!r}: not a JSON list of GPU knob records: {exc}") from None
    return knobs


def worker_result(reply: Done | Failed | NeedsRestart) -> ExperimentResult:
    """The result the worker wrote; a failure becomes `error: <cause>` and its exit status."""
    if isinstance(reply, Failed):
        raise fail(reply.cause)
    if not isinstance(reply, Done):
        raise fail(
            f"{reply.cause}; restart the service and run the experiment again",
            code=EXIT_NEEDS_RESTART,
        )
    path = Path(reply.result_path)
    try:
        return ExperimentResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(
            f"{path}: the worker reported it written, but it cannot be read: {exc}"
        ) from None


def print_progress(progress: Progress) -> None:
    print(f"lem worker: {progress.message}", file=sys.stderr, flush=True)


def default_baseline_cache(out_dir: Path) -> Path | None:
    """STATE/baseline.json for an output directory STATE/results/EXP_ID, else None."""
    if out_dir.parent.name == STATE_RESULTS_DIR:
        return out_dir.parent.parent / BASELINE_FILE
    return None


def summary_line(result: ExperimentResult, out_dir: Path) -> str:
    name = result.identity.exp_id or result.identity.config_name
    energy = result.energy
    if energy.total_energy_j is None:
        energy_text = "energy n/a (no energy source)"
    else:
        energy_text = f"{energy.total_energy_j:.2f} J ({energy.source})"
    rate = result.throughput.output_tokens_per_s
    timing = result.timing
    load_text = "model reused" if timing.model_reused else f"loaded in {timing.load_seconds:.2f} s"
    return (
        f"{name}: {result.tokens.output_tokens} output tokens in "
        f"{timing.window_seconds:.2f} s ({rate:.1f} tok/s), "
        f"{energy_text}, {load_text} -> {out_dir / 'result.json'}"
    )


def worker(
    socket_option: Path | None = typer.Option(
        None, "--socket", help=SOCKET_HELP, show_default=False
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        envvar="LEM_BACKEND",
        help=f"Import this backend's engine at start-up ({', '.join(BACKENDS)}), so that "
        "the first experiment does not pay for it.",
    ),
    memory_tolerance_mib: float = typer.Option(
        512.0, "--memory-tolerance-mib", min=0.0, help="Cold start: GPU memory allowed to stay."
    ),
    memory_tolerance_pct: float = typer.Option(
        5.0,
        "--memory-tolerance-pct",
        min=0.0,
        max=100.0,
        help="Cold start: the same as a share of the GPU's memory (the larger one applies).",
    ),
    status: bool = typer.Option(
        False, "--status", help="Print the running worker's statistics as JSON and exit."
    ),
    cancel: str | None = typer.Option(
        None,
        "--cancel",
        metavar="EXP_ID",
        help="With --status: first ask the worker to stop experiment EXP_ID (it stops at "
        "its next stage; one waiting its turn never starts).",
    ),
) -> None:
    """Serve experiments on a Unix socket, keeping the last model loaded between them.

    The backend container's main process: `lem experiment` finds it through the socket
    and hands it the experiment. One experiment is measured at a time; others wait.
    SIGTERM unloads the model and exits. See docs/worker.md.

    Example: lem worker --socket /run/lem/worker.sock
    """
    path = socket_path(socket_option)
    if cancel is not None and not status:
        raise fail("--cancel goes with --status")
    if status:
        try:  # a worker that does not answer within seconds is an error (exit 2): frozen
            typer.echo(json.dumps(worker_status(path, cancel).model_dump()))
        except NoWorker as exc:
            raise fail(str(exc), code=1) from None
        return
    from llenergymeasure.runner.worker import MemoryTolerance, Worker, serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s lem worker: %(message)s", stream=sys.stderr
    )
    log = logging.getLogger("llenergymeasure.worker")
    preload_backend(backend, log)
    server = Worker(MemoryTolerance(memory_tolerance_mib, memory_tolerance_pct))
    stopped_by = serve(server, path, lambda: log.info("serving on %s (pid %d)", path, os.getpid()))
    if server.stop():
        log.info("%s: model unloaded, exiting", stopped_by)
        return
    log.warning("%s during %s: exiting without waiting for it", stopped_by, server.stats.busy_with)
    logging.shutdown()
    os._exit(0)  # the experiment thread cannot be interrupted; the process exit frees its memory


def preload_backend(backend: str | None, log: logging.Logger) -> None:
    """Import the engine now; a missing one is reported when an experiment needs it."""
    if backend is None:
        return
    from llenergymeasure.errors import LemError
    from llenergymeasure.runner.backends import import_backend

    if backend not in BACKENDS:
        raise fail(f"--backend / LEM_BACKEND: {backend!r} is not one of {', '.join(BACKENDS)}")
    try:
        import_backend(backend)
    except LemError as exc:
        log.warning("%s", exc)


def tiny(
    out: Path = typer.Option(
        ..., "--out", help="Directory for the model (created).", show_default=False
    ),
    seed: int = typer.Option(0, "--seed", help="Weights seed: same seed, same files."),
    vocab_size: int = typer.Option(TINY_DEFAULTS.vocab_size, "--vocab-size", min=300),
    hidden_size: int = typer.Option(
        TINY_DEFAULTS.hidden_size, "--hidden-size", min=32, help="A multiple of 32."
    ),
    layers: int = typer.Option(TINY_DEFAULTS.layers, "--layers", min=1),
) -> None:
    """Create a tiny random-initialised Llama-style model and its tokenizer, offline.

    The tokenizer is trained on text shipped in the package; the directory loads with
    AutoModelForCausalLM / AutoTokenizer. For demos and tests, not for real numbers.

    Example: lem model tiny --out models/tiny
    """
    from llenergymeasure.runner.tiny_model import create_tiny_model

    try:
        spec = TinyModelSpec(
            seed=seed, vocab_size=vocab_size, hidden_size=hidden_size, layers=layers
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    info = create_tiny_model(out, spec)
    typer.echo(
        f"tiny model ({info.parameters:,} parameters, vocabulary {info.vocab_size}) "
        f"written to {info.path}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("experiment")(reports_errors(experiment))
    app.command("worker")(reports_errors(worker))
    model_app = typer.Typer(
        name="model", help="Create models for demos and tests.", no_args_is_help=True
    )
    model_app.command("tiny")(reports_errors(tiny))
    app.add_typer(model_app)
