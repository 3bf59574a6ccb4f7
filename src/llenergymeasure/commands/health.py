"""Commands: `lem health` (GPU snapshot), `lem baseline` (idle power per GPU),
`lem wait-cool` (a thermal gap) and `lem release` (hand the GPU to another service)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from llenergymeasure.commands.common import fail
from llenergymeasure.measure import baseline as idle
from llenergymeasure.measure import nvml
from llenergymeasure.measure.baseline import idle_baseline, load_baseline
from llenergymeasure.measure.gpus import visible_gpu_indices
from llenergymeasure.measure.health import health_report
from llenergymeasure.measure.thermal import CoolingTolerance, thermal_gap

if TYPE_CHECKING:
    from llenergymeasure.contracts.wire import Progress

STATE_DIR_ENV = "LEM_STATE_DIR"
BASELINE_FILE = "baseline.json"


def _cell(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _health_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"GPUs on {report['hostname']} (driver {report.get('driver_version')})")
    for column in ("gpu", "name", "memory MiB", "util %", "temp °C", "power W", "other procs"):
        table.add_column(column)
    for gpu in report["gpus"]:
        others = [p for p in gpu["processes"] if p["owner"] != "self"]
        table.add_row(
            str(gpu["index"]),
            _cell(gpu["name"]),
            f"{_cell(gpu['memory_used_mib'])} / {_cell(gpu['memory_total_mib'])}",
            _cell(gpu["utilization_pct"]),
            _cell(gpu["temperature_c"]),
            _cell(gpu["power_w"]),
            ", ".join(f"{p['pid']} ({p['owner']})" for p in others) or "-",
        )
    return table


def health(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Show each visible GPU's memory, utilisation, temperature and compute processes.

    Exits 0 also on a host without an NVIDIA driver (the report then says nvml: false).
    When a `lem worker` answers on its socket, each GPU's memory_outside_worker_pct
    leaves out what the worker holds (its resident model): the share a restart between
    cycles is for. On a GPU shared by several services, ask the GPU's holder after the
    others ran `lem release`: their leftover then counts as outside.

    Example: lem health --json
    """
    report = health_report(worker_memory_held())
    if as_json:
        typer.echo(json.dumps(report))
    elif not report["nvml"]:
        typer.echo(f"no NVML on {report['hostname']}: {report['reason']}")
    else:
        Console().print(_health_table(report))


def worker_memory_held() -> dict[int, float]:
    """GPU memory the worker of this service holds per GPU; {} when no worker answers."""
    from llenergymeasure.contracts.wire import WorkerError, socket_path
    from llenergymeasure.runner.client import NoWorker, worker_status

    try:
        return worker_status(socket_path()).gpu_memory_held_mib
    except (NoWorker, WorkerError):
        return {}


def baseline(
    seconds: float = typer.Option(
        30.0, "--seconds", min=0.5, help="How long to sample idle power."
    ),
    out: Path = typer.Option(..., "--out", help="Baseline JSON file (also the cache)."),
    force: bool = typer.Option(False, "--force", help="Measure again even when the file is fresh."),
    settle_max_seconds: float = typer.Option(
        idle.DEFAULT_POLICY.settle_max_s,
        "--settle-max-seconds",
        min=0.0,
        help="Longest wait for the GPUs to settle before measuring.",
    ),
) -> None:
    """Measure idle power per visible GPU and write it to FILE.

    A fresh FILE is reused (re-checked for more than 10 % drift once it is older than
    10 minutes); --force measures again. Before measuring, each GPU settles: back near
    its earlier idle temperature and power, or, with no earlier figure, until its
    temperature and power stopped falling (30 s without a fall), waiting at most
    --settle-max-seconds; a figure taken unsettled never replaces a lower one. Without
    NVML nothing is written and the exit status is 0.

    Example: lem baseline --seconds 30 --out /lem/state/demo/baseline.json
    """
    gpus = visible_gpu_indices()
    if not gpus:
        typer.echo(f"no idle baseline: no GPU visible through NVML ({nvml.unavailable_reason()})")
        return
    if force:
        out.unlink(missing_ok=True)
    policy = dataclasses.replace(idle.DEFAULT_POLICY, settle_max_s=settle_max_seconds)
    if idle_baseline(gpus, seconds, out, policy) is None:
        raise fail(f"{out}: no idle baseline: the GPUs {gpus} gave no power readings", code=1)
    measured = load_baseline(out)
    assert measured is not None  # idle_baseline has just written or re-checked it
    typer.echo(json.dumps(measured.describe()))


def wait_cool(
    max_seconds: float = typer.Option(
        ...,
        "--max-seconds",
        min=0.0,
        help="The cap: the configured gap length.",
        show_default=False,
    ),
    temp_tolerance: float = typer.Option(
        2.0, "--temp-tolerance", min=0.0, help="°C above idle temperature that counts as cool."
    ),
    power_tolerance_pct: float = typer.Option(
        10.0, "--power-tolerance-pct", min=0.0, help="% above idle power that counts as cool."
    ),
    baseline_file: Path | None = typer.Option(
        None,
        "--baseline",
        envvar="LEM_BASELINE_CACHE",
        help=f"Idle baseline file (`lem baseline`). Default: ${STATE_DIR_ENV}/{BASELINE_FILE}.",
        show_default=False,
    ),
    poll_seconds: float = typer.Option(1.0, "--poll-seconds", min=0.01, help="Time between reads."),
) -> None:
    """Wait until every GPU is back near its idle temperature and power, at most --max-seconds.

    Prints JSON: waited_seconds, reason (cool, cap, no-gpu without NVML, no-baseline
    without idle values: then the caller waits a fixed gap instead) and the GPUs' last
    temperatures and power. Pass waited_seconds to `lem experiment --gap-waited`.

    Example: lem wait-cool --max-seconds 60 --baseline /lem/state/baseline.json
    """
    path = baseline_file if baseline_file is not None else default_baseline_file()
    waited = thermal_gap(
        max_seconds,
        load_baseline(path) if path is not None else None,
        CoolingTolerance(temperature_c=temp_tolerance, power_pct=power_tolerance_pct),
        poll_seconds,
    )
    typer.echo(json.dumps(waited.as_json()))


def default_baseline_file() -> Path | None:
    """STATE/baseline.json when $LEM_STATE_DIR is set (as in the backend services)."""
    state_dir = os.environ.get(STATE_DIR_ENV)
    return Path(state_dir) / BASELINE_FILE if state_dir else None


def release(
    worker_socket: Path | None = typer.Option(
        None,
        "--worker-socket",
        help="Worker socket. Default: $LEM_WORKER_SOCKET, else /run/lem/worker.sock.",
        show_default=False,
    ),
) -> None:
    """Ask this service's worker to unload its model and give the GPU back, for another
    service of the lane; the container keeps running.

    Prints one JSON line: released, verified (NVML confirmed the memory is back),
    unloaded_model, detail, memory_before_mib / memory_after_mib (GPU index -> MiB used)
    and the worker's stats. Exits 0 when released, 75 when the memory did not come back
    (only a restart of the service frees it), 2 when no worker answers (the JSON line is
    then {"released": false, "error": ...}). Waits for an experiment being measured.
    See docs/worker.md, "GPU hand-over".

    Example: docker compose exec -T vllm lem release
    """
    from llenergymeasure.contracts.wire import (
        Failed,
        Released,
        ReleaseRequest,
        WorkerError,
        socket_path,
    )
    from llenergymeasure.runner.client import (
        EXIT_NEEDS_RESTART,
        NoWorker,
        connect_worker,
        exchange,
    )

    path = socket_path(worker_socket)
    try:
        reply = exchange(connect_worker(path), ReleaseRequest(), print_progress)
        if isinstance(reply, Failed):
            raise WorkerError(f"the worker at {path} refused the release: {reply.cause}")
        if not isinstance(reply, Released):
            raise WorkerError(f"the worker at {path} answered a release with {reply.type}")
    except (NoWorker, WorkerError) as exc:
        typer.echo(json.dumps({"released": False, "error": str(exc)}))
        raise fail(str(exc)) from None
    typer.echo(reply.model_dump_json(exclude={"type"}))
    if not reply.released:
        raise typer.Exit(EXIT_NEEDS_RESTART)


def print_progress(progress: Progress) -> None:
    print(f"lem worker: {progress.message}", file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("health")(health)
    app.command("baseline")(baseline)
    app.command("wait-cool")(wait_cool)
    app.command("release")(release)
