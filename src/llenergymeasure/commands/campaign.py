"""Commands: `lem validate`, `lem grid` and `lem plan` (campaign files, before anything runs)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from llenergymeasure.commands.common import fail, reports_errors
from llenergymeasure.config.grid import DEFAULT_MAX_CONFIGS, GridExpansion, expand_grid
from llenergymeasure.config.loader import LoadedCampaign, load_campaign, read_yaml
from llenergymeasure.config.models import BACKEND_SECTIONS, ExperimentConfig
from llenergymeasure.controller.plan import Plan, build_plan, plan_json, plan_or_reuse
from llenergymeasure.errors import ConfigError

SUMMARY_MAX_ROWS = 15  # keeps `lem validate` on one screen for large campaigns


def validate(
    campaign_file: Path = typer.Argument(..., help="Campaign YAML file.", show_default=False),
) -> None:
    """Check a campaign file and summarise it: configs, cycles, experiments, backends, order.

    Exits 0 when the campaign is valid; otherwise exits 2 and prints one line per
    error, `FILE: key.path: problem`, on stderr.

    Example: lem validate campaigns/demo.yml
    """
    _print_summary(load_campaign(campaign_file))


def _print_summary(loaded: LoadedCampaign) -> None:
    campaign, configs = loaded.campaign, loaded.configs
    execution = campaign.execution
    table = Table()
    table.add_column("config", overflow="fold")  # names are ids: fold, never cut
    for column in ("backend", "model", "precision"):
        table.add_column(column)
    for config in configs[:SUMMARY_MAX_ROWS]:
        table.add_row(config.config_name, config.backend, config.model.path, config.precision)
    if len(configs) > SUMMARY_MAX_ROWS:
        table.add_row(f"... and {len(configs) - SUMMARY_MAX_ROWS} more", "", "", "")
    backends = Counter(config.backend for config in configs)
    # plain lines (not rich) are never wrapped, so scripts can grep them
    typer.echo(f"{loaded.source}: campaign {campaign.campaign_name} is valid")
    Console().print(table)
    typer.echo(
        f"configs {len(configs)} x cycles {execution.cycles} = "
        f"experiments {len(configs) * execution.cycles}; "
        f"backends {', '.join(f'{b} ({n})' for b, n in sorted(backends.items()))}; "
        f"order {execution.order}; seed {execution.seed}"
    )


def grid(
    base_file: Path = typer.Argument(
        ..., help="Base experiment config (YAML mapping; may be partial).", show_default=False
    ),
    vary: list[str] = typer.Option(
        ...,
        "--vary",
        help="KEY=V1,V2,...; repeatable. Values are YAML scalars (1 is an int, true a bool).",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "--out", help="Directory for the config files.", show_default=False
    ),
    max_configs: int = typer.Option(
        DEFAULT_MAX_CONFIGS, "--max-configs", min=1, help="Refuse grids with more combinations."
    ),
) -> None:
    """Expand a base config over varied keys: one config file per valid combination.

    A backend-specific key (pytorch.batch_size) applies only to its own backend when
    `backend` is varied too. Prints, per backend, how many combinations were valid
    and invalid, and why each invalid one was rejected. Exits 1 when none is valid.

    Example: lem grid base.yml --vary backend=pytorch,vllm --vary pytorch.batch_size=1,8
    --vary vllm.max_num_seqs=64,256 --out configs/
    """
    base = read_yaml(base_file)
    if not isinstance(base, dict):
        raise ConfigError(f"{base_file}: expected a mapping at the top level")
    base.setdefault("config_name", base_file.stem)
    expansion = expand_grid(base, parse_vary(vary), max_configs, source=str(base_file))
    for config in expansion.valid:
        write_config_file(config, out)
    _print_grid_report(expansion, out)
    if not expansion.valid:
        raise typer.Exit(1)


def parse_vary(items: list[str]) -> dict[str, list[Any]]:
    """``["pytorch.batch_size=1,4"]`` -> ``{"pytorch.batch_size": [1, 4]}`` (YAML scalars)."""
    vary: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"--vary {item!r}: expected KEY=V1,V2,...")
        if key in vary:
            raise ConfigError(f"--vary {key}: given more than once")
        vary[key] = [_scalar(item, text) for text in values.split(",")]
    return vary


def _scalar(item: str, text: str) -> Any:
    if not text.strip():
        raise ConfigError(f"--vary {item!r}: empty value")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--vary {item!r}: {text!r} is not a YAML scalar") from None


def write_config_file(config: ExperimentConfig, directory: Path) -> Path:
    """Write `config` as `DIR/<config_name>.yml`, fully resolved (other backends left out)."""
    data = config.model_dump(mode="json")
    for backend in BACKEND_SECTIONS:
        if data.get(backend) is None:
            data.pop(backend, None)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{config.config_name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _print_grid_report(expansion: GridExpansion, out: Path) -> None:
    table = Table(title="grid")
    for column in ("backend", "valid", "invalid"):
        table.add_column(column)
    for backend, (valid, invalid) in expansion.counts_by_backend().items():
        table.add_row(backend, str(valid), str(invalid))
    Console().print(table)
    for combo, reason in expansion.invalid:
        values = " ".join(f"{key}={value}" for key, value in combo.items())
        typer.echo(f"invalid: {values}: {reason}")
    typer.echo(f"wrote {len(expansion.valid)} config files to {out}")


def plan(
    campaign_file: Path | None = typer.Argument(
        None, help="Campaign YAML file (not with --pilot).", show_default=False
    ),
    hosts: str = typer.Option(
        "localhost", "--hosts", help="Comma-separated hosts; configs go round-robin."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Plan file: reused when the campaign is unchanged, else updated."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    replan: bool = typer.Option(False, "--replan", help="With --out: build afresh regardless."),
    pilot: Path | None = typer.Option(
        None,
        "--pilot",
        help="Instead: suggest the number of cycles from a pilot run's results directory.",
    ),
    baseline: str | None = typer.Option(
        None, "--baseline", help="With --pilot: the config every other is compared with."
    ),
    detect: str = typer.Option(
        "5%", "--detect", help="With --pilot: the difference to detect, e.g. 5% or 0.05."
    ),
    metric: str = typer.Option(
        "j_per_output_token", "--metric", help="With --pilot: the metric compared."
    ),
) -> None:
    """Expand a campaign into its ordered experiments: one per (config, cycle), with host.

    The plan is deterministic: same campaign, same ids, order and hosts, byte for
    byte. With --out the plan file is reused when nothing changed; a changed
    campaign is reported (configs added, removed, changed) and the old file kept.

    With --pilot RESULTS --baseline CONFIG: from the pilot's cycle-to-cycle variation
    of each config's paired differences to the baseline, the cycles each comparison
    needs to detect --detect (alpha 0.05 two-sided, power 0.8), and the number to run.

    Example: lem plan campaigns/demo.yml --hosts gpu1,gpu2 --out results/demo/plan.json

    Example: lem plan --pilot results/pilot --baseline tiny-bs1 --detect 5%
    """
    if pilot is not None:
        _plan_from_pilot(pilot, baseline, detect, metric)
        return
    if campaign_file is None:
        raise fail("give a campaign file (or --pilot RESULTS to size one)")
    if replan and out is None:
        raise fail("--replan needs --out (the plan file to replace)")
    loaded = load_campaign(campaign_file)
    host_list = [host.strip() for host in hosts.split(",")]
    if out is None:
        the_plan = build_plan(loaded, host_list)
    else:
        the_plan, report = plan_or_reuse(loaded, host_list, out, replan=replan)
        for line in report.lines():
            typer.echo(line, err=as_json)
    if as_json:
        typer.echo(plan_json(the_plan), nl=False)
    elif out is None:
        _print_plan_table(the_plan)


def _plan_from_pilot(pilot: Path, baseline: str | None, detect: str, metric: str) -> None:
    """Print the cycles each comparison needs and the number to run; exit 1 if none."""
    from llenergymeasure.commands.results import parse_difference
    from llenergymeasure.results.aggregate import aggregate_directory
    from llenergymeasure.results.compare import COMPARED_METRICS, suggested_cycles

    if baseline is None:
        raise fail("--pilot needs --baseline CONFIG: cycles are paired with the baseline's")
    if metric not in COMPARED_METRICS:
        raise fail(f"--metric: {metric!r} is not one of {', '.join(COMPARED_METRICS)}")
    difference = parse_difference(detect)
    summary = aggregate_directory(pilot, baseline=baseline, detect=difference)
    ratios = [ratio for ratio in summary.comparisons if ratio.metric == metric]
    for note in summary.warnings:
        typer.echo(f"warning: {note}")
    if not ratios:
        raise fail(f"{pilot}: no config compared with baseline {baseline!r}", code=1)
    for ratio in ratios:
        cv = "n/a" if ratio.difference_cv is None else f"{ratio.difference_cv:.2%}"
        needed = ratio.cycles_needed or ("n/a" if ratio.difference_cv is None else "> 10000")
        typer.echo(
            f"{ratio.config_name} on {ratio.hardware}: {ratio.ratio.n} pilot pairs, "
            f"CV of paired differences {cv}, cycles to detect {difference:.1%}: {needed}"
        )
    suggestion = suggested_cycles(ratios)
    typer.echo(
        f"suggested cycles ({metric}, {difference:.1%}, alpha 0.05, power 0.8): "
        f"{suggestion if suggestion is not None else 'more than any campaign can run'}"
    )


def _print_plan_table(the_plan: Plan) -> None:
    table = Table(title=f"plan {the_plan.campaign_name} ({the_plan.order}, seed {the_plan.seed})")
    for column in ("position", "exp_id", "config", "cycle", "host"):
        table.add_column(column)
    for e in the_plan.experiments:
        table.add_row(str(e.position), e.exp_id, e.config_name, str(e.cycle), e.host)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("validate")(reports_errors(validate))
    app.command("grid")(reports_errors(grid))
    app.command("plan")(reports_errors(plan))
