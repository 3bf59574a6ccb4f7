"""Commands: `lem experiment` (one measured run) and `lem model tiny` (a test model).

Engines are imported only when an experiment loads its backend, and torch only when
the backend or the tiny model needs it: `import llenergymeasure.cli` stays light.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llenergymeasure.commands.common import fail, reports_errors
from llenergymeasure.config.loader import load_experiment
from llenergymeasure.results.schema import ExperimentResult

STATE_RESULTS_DIR = "results"
BASELINE_FILE = "baseline.json"


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
) -> None:
    """Run one experiment: load the model, warm up, measure a window, write OUT/result.json.

    Identity options (or LEM_EXP_ID, LEM_CONFIG_HASH, LEM_CYCLE, LEM_CAMPAIGN,
    LEM_HOST) are copied into the result. Exits 0 with a one-line summary, or
    non-zero with `error: <cause>` on stderr.

    Example: lem experiment configs/tiny.yml --out results/tiny --exp-id demo__tiny__c01
    """
    from llenergymeasure.runner.experiment import RunIdentity, run_experiment

    config = load_experiment(config_file)
    identity = RunIdentity(
        exp_id=exp_id, campaign_name=campaign, config_hash=config_hash, cycle=cycle, host=host
    )
    cache = baseline_cache if baseline_cache is not None else default_baseline_cache(out)
    result = run_experiment(config, out, identity, baseline_cache=cache)
    typer.echo(summary_line(result, out))


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
    return (
        f"{name}: {result.tokens.output_tokens} output tokens in "
        f"{result.timing.window_seconds:.2f} s ({rate:.1f} tok/s), "
        f"{energy_text} -> {out_dir / 'result.json'}"
    )


def tiny(
    out: Path = typer.Option(
        ..., "--out", help="Directory for the model (created).", show_default=False
    ),
    seed: int = typer.Option(0, "--seed", help="Weights seed: same seed, same files."),
    vocab_size: int = typer.Option(2048, "--vocab-size", min=300),
    hidden_size: int = typer.Option(128, "--hidden-size", min=32, help="A multiple of 32."),
    layers: int = typer.Option(2, "--layers", min=1),
) -> None:
    """Create a tiny random-initialised Llama-style model and its tokenizer, offline.

    The tokenizer is trained on text shipped in the package; the directory loads with
    AutoModelForCausalLM / AutoTokenizer. For demos and tests, not for real numbers.

    Example: lem model tiny --out models/tiny
    """
    from llenergymeasure.runner.tiny_model import TinyModelSpec, create_tiny_model

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
    model_app = typer.Typer(
        name="model", help="Create models for demos and tests.", no_args_is_help=True
    )
    model_app.command("tiny")(reports_errors(tiny))
    app.add_typer(model_app)
