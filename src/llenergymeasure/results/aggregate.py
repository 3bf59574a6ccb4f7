"""Aggregate experiment results into confidence intervals over cycles.

Results are grouped by (config_name, config_hash, hardware): results from
different GPU (or CPU) models are never pooled, nor are results of a config
whose content changed between runs. A metric that is null in a result is left
out of that metric's sample, and a metric null in every cycle stays null
(printed ``n/a``), never averaged as zero. Each row names the exp_ids, cycles
and files it was computed from, so every number traces back to result files.
The interval method is chosen per sample size (docs/statistics.md). With a baseline
config, the summary also holds each config's paired ratio to it (results/compare.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llenergymeasure.contracts.result import (
    HEADLINE_METRICS,
    SCHEMA_VERSION,
    SERVING_METRICS,
    ExperimentResult,
)
from llenergymeasure.errors import LemError
from llenergymeasure.files import atomic_write_text
from llenergymeasure.results.compare import PairedRatio, paired_ratios
from llenergymeasure.results.recommend import ParetoPoint, pareto_summary
from llenergymeasure.results.serving import CheapestMeetingSlo, cheapest_meeting_slo
from llenergymeasure.results.texttable import TextTable
from llenergymeasure.stats.bootstrap import (
    EXACT_MAX_N,
    MIN_BOOTSTRAP_N,
    BootstrapCI,
    Method,
    bootstrap_ci_many,
)
from llenergymeasure.stats.power import MAX_CYCLES

SUMMARY_VERSION = 1
COMPARISON_FILE = "comparison.csv"  # written when a baseline is given
METRIC_LABELS: dict[str, str] = {
    "energy_j": "energy (J)",
    "idle_adjusted_energy_j": "idle-adjusted energy (J)",
    "j_per_output_token": "J / output token",
    "adjusted_j_per_output_token": "idle-adjusted J / output token",
    "wh_per_1k_requests": "Wh / 1,000 requests",
    "output_tokens_per_s": "output tokens/s",
    "requests_per_s": "requests/s",
    "ttft_mean_s": "TTFT mean (s)",
    "latency_p50_s": "latency p50 (s)",
    "latency_p99_s": "latency p99 (s)",
    "load_seconds": "model load (s)",
    "achieved_request_rate": "achieved requests/s",
    "serving_output_tokens_per_s": "window output tokens/s",
    **{
        f"{name}_{stat}_s": f"{label} {stat} (s)"
        for name, label in (("ttft", "TTFT"), ("itl", "ITL"), ("e2e", "e2e latency"))
        for stat in ("p50", "p90", "p99")
    },
    "slo_attainment_pct": "SLO attainment (%)",
    "goodput_rps": "goodput (requests/s)",
    "mean_in_flight": "mean in flight",
    "window_s": "steady window (s)",
    "serving_j_per_output_token": "window J / output token",
    "serving_j_per_request": "window J / request",
    "serving_wh_per_1k_requests": "window Wh / 1,000 requests",
}
CSV_COLUMNS = (
    "config_name",
    "config_hash",
    "backend",
    "hardware",
    "metric",
    "n",
    "n_dropped",
    "mean",
    "std",
    "ci_lower",
    "ci_upper",
    "confidence",
    "n_resamples",
    "warning",
    "exp_ids",
    "method",
)
METHOD_LABELS: dict[str, str] = {
    "auto": f"Student-t below {MIN_BOOTSTRAP_N} cycles, studentized bootstrap from "
    f"{MIN_BOOTSTRAP_N}",
    "student-t": "Student-t",
    "bootstrap-t": "studentized bootstrap",
    "percentile": "percentile bootstrap (undercovers below 10 cycles)",
}
# Partial output of an interrupted attempt, moved aside by the manifest: never aggregated.
_INTERRUPTED_DIR = re.compile(r"\.interrupted-\d+$")


class SummaryRow(BaseModel):
    """One configuration on one kind of hardware, over its cycles."""

    config_name: str
    config_hash: str | None
    backend: str
    hardware: str
    n: int  # results (cycles) in this row
    exp_ids: list[str | None]
    cycles: list[int | None]
    sources: list[str]  # result files, where known
    energy_sources: list[str]
    metrics: dict[str, BootstrapCI]
    warnings: list[str]
    # server mode only (null for offline rows): cycles whose steady window was unstable,
    # and the config's latency SLO (load.slo: ttft_ms, itl_ms)
    unstable_windows: int | None = None
    slo: dict[str, float] | None = None


class Summary(BaseModel):
    summary_version: int = SUMMARY_VERSION
    confidence: float
    n_resamples: int
    seed: int
    method: str = "auto"  # as asked for; each interval names the method it used
    metrics: list[str]
    rows: list[SummaryRow]
    baseline: str | None = None  # config the comparisons are relative to
    detect: float | None = None  # stated relative difference for `cycles_needed` (0.05: 5 %)
    comparisons: list[PairedRatio] = []
    pareto: list[ParetoPoint] = []  # the energy-latency front of each GPU knob sweep
    cheapest: list[CheapestMeetingSlo] = []  # server mode: least J/token meeting the SLO
    sources: list[str]  # every result file that went into it, relative to the results folder
    load_errors: list[str] = []  # result files that could not be read, with the reason
    warnings: list[str] = []


@dataclass
class LoadedResults:
    """Results read from a directory, each with the file it came from."""

    results: list[ExperimentResult] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Sourced:
    result: ExperimentResult
    source: str | None


def find_result_files(root: Path) -> list[str]:
    """Every `result.json` under `root`, as paths relative to it in path order, except in
    `<exp_id>.interrupted-<n>` directories.

    os.walk, pruned at interrupted directories (a third of rglob's time), and plain
    strings, not Paths (Path parsing and relative_to were a tenth of `lem aggregate`'s
    time on 10,000 results).
    """
    top = str(root)
    found = []
    for directory, subdirectories, files in os.walk(top):
        subdirectories[:] = [name for name in subdirectories if not _INTERRUPTED_DIR.search(name)]
        if "result.json" in files:
            found.append(os.path.join(directory[len(top) :].lstrip(os.sep), "result.json"))
    return sorted(found, key=lambda source: source.split(os.sep))


def _read_result(path: str) -> ExperimentResult:
    try:
        with open(path, "rb") as file:
            result = ExperimentResult.model_validate_json(file.read())
    except OSError as exc:
        raise LemError(f"{path}: cannot read: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise LemError(f"{path}: not a valid result: {where}: {first['msg']}") from None
    if result.schema_version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise LemError(
            f"{path}: schema_version: {result.schema_version!r} is not readable by this "
            f"version (reads {SCHEMA_VERSION.split('.')[0]}.x)"
        )
    return result


def load_result_files(root: str | Path) -> LoadedResults:
    """Read every result under `root`; a file that fails to load is reported, not fatal.

    Sources are relative to `root`, so that a results folder moved elsewhere still
    names its files.
    """
    root = Path(root)
    if not root.is_dir():
        raise LemError(f"{root}: not a directory")
    loaded = LoadedResults()
    for source in find_result_files(root):
        try:
            loaded.results.append(_read_result(os.path.join(root, source)))
        except LemError as exc:
            loaded.errors.append(str(exc))
        else:
            loaded.sources.append(source)
    return loaded


def _finished_at(result: ExperimentResult) -> datetime:
    try:
        moment = datetime.fromisoformat(result.timing.finished_at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _deduplicate(items: list[_Sourced]) -> tuple[list[_Sourced], list[str]]:
    """One result per exp_id (the newest finished wins); a warning per duplicated exp_id."""
    by_exp_id: dict[str, list[_Sourced]] = defaultdict(list)
    kept = []
    for item in items:
        exp_id = item.result.identity.exp_id
        if exp_id is None:
            kept.append(item)
        else:
            by_exp_id[exp_id].append(item)
    warnings = []
    for exp_id, copies in by_exp_id.items():
        newest = max(copies, key=lambda item: _finished_at(item.result))
        kept.append(newest)
        if len(copies) > 1:
            where = ", ".join(str(item.source or "(in memory)") for item in copies)
            warnings.append(
                f"exp_id {exp_id} appears {len(copies)} times ({where}): counted once, "
                f"keeping the one finished at {newest.result.timing.finished_at}"
            )
    return kept, warnings


def _group_key(result: ExperimentResult) -> tuple[str, str, str]:
    return (
        result.identity.config_name,
        result.environment.hardware,
        result.identity.config_hash or "",
    )


def _cycles_warning(n: int) -> str | None:
    if n == 1:
        return "1 cycle: no confidence interval"
    if n < MIN_BOOTSTRAP_N:
        return f"{n} cycles: fewer than {MIN_BOOTSTRAP_N}, wide Student-t intervals"
    return None


def _row_warnings(members: list[_Sourced], energy_sources: list[str]) -> list[str]:
    cycles_warning = _cycles_warning(len(members))
    warnings = [cycles_warning] if cycles_warning else []
    throttled = sum(1 for m in members if m.result.thermal.throttled)
    if throttled:
        warnings.append(f"{throttled} of {len(members)} result(s) measured while throttled")
    if len(energy_sources) > 1:
        warnings.append(f"energy measured by different sources: {', '.join(energy_sources)}")
    reasons = sorted(
        {r for m in members if m.result.serving for r in m.result.serving.window.unstable_reasons}
    )
    unstable = _unstable_windows(members)
    if unstable:
        warnings.append(
            f"{unstable} of {len(members)} cycle(s) had an unstable steady-state window"
            + (f" ({'; '.join(reasons)})" if reasons else "")
        )
    return warnings


def _unstable_windows(members: list[_Sourced]) -> int | None:
    """Cycles whose server-mode window was flagged unstable; None for offline rows."""
    served = [m.result.serving for m in members if m.result.serving is not None]
    return sum(1 for s in served if not s.window.stable) if served else None


def _slo(result: ExperimentResult) -> dict[str, float] | None:
    """The SLO of a server-mode result's resolved config (load.slo), else None."""
    if result.serving is None:
        return None
    slo = (result.config.get("load") or {}).get("slo")
    return {k: float(slo[k]) for k in ("ttft_ms", "itl_ms")} if slo else None


def _build_row(members: list[_Sourced], metrics: dict[str, BootstrapCI]) -> SummaryRow:
    members = sorted(members, key=lambda m: (m.result.identity.cycle or 0, str(m.source)))
    first = members[0].result
    energy_sources = sorted({m.result.energy.source for m in members})
    return SummaryRow(
        config_name=first.identity.config_name,
        config_hash=first.identity.config_hash,
        backend=first.identity.backend,
        hardware=first.environment.hardware,
        n=len(members),
        exp_ids=[m.result.identity.exp_id for m in members],
        cycles=[m.result.identity.cycle for m in members],
        sources=[m.source for m in members if m.source is not None],
        energy_sources=energy_sources,
        metrics=metrics,
        warnings=_row_warnings(members, energy_sources),
        unstable_windows=_unstable_windows(members),
        slo=_slo(first),
    )


def _changed_config_warnings(keys: Sequence[tuple[str, str, str]]) -> list[str]:
    hashes: dict[str, set[str]] = defaultdict(set)
    for config_name, _, config_hash in keys:
        hashes[config_name].add(config_hash)
    return [
        f"config {name!r} has results for {len(found)} different config hashes "
        f"({', '.join(sorted(found))}): kept in separate rows, never pooled"
        for name, found in sorted(hashes.items())
        if len(found) > 1
    ]


def aggregate_results(
    results: Sequence[ExperimentResult],
    *,
    sources: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
    baseline: str | None = None,
    detect: float | None = None,
) -> Summary:
    """One row per (config, hardware) with a CI per headline metric.

    `sources`, when given, holds the file each result was read from (same order).
    `baseline`, when given, adds every config's paired ratio to that config; `detect`
    (a relative difference) adds the cycles each comparison needs to detect it.
    """
    if sources is not None and len(sources) != len(results):
        raise ValueError(f"{len(sources)} sources given for {len(results)} results")
    items = [
        _Sourced(result, sources[i] if sources is not None else None)
        for i, result in enumerate(results)
    ]
    kept, warnings = _deduplicate(items)
    groups: dict[tuple[str, str, str], list[_Sourced]] = defaultdict(list)
    for item in kept:
        groups[_group_key(item.result)].append(item)
    keys = sorted(groups)
    # server metrics only where a server-mode result is: offline summaries keep their columns
    served = any(item.result.serving is not None for item in kept)
    names = HEADLINE_METRICS + (SERVING_METRICS if served else ())
    values = {key: [_metric_values(m.result, served) for m in groups[key]] for key in keys}
    samples = [[found[metric] for found in values[key]] for key in keys for metric in names]
    cis = iter(bootstrap_ci_many(samples, confidence, n_resamples, seed, method))
    rows = [_build_row(groups[key], {m: next(cis) for m in names}) for key in keys]
    comparisons: list[PairedRatio] = []
    if baseline is not None:
        by_key = {key: [m.result for m in groups[key]] for key in keys}
        comparisons, notes = paired_ratios(
            by_key,
            baseline,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
            method=method,
            detect=detect,
        )
        warnings += notes
    return Summary(
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        method=method,
        metrics=list(names),
        rows=rows,
        baseline=baseline,
        detect=detect,
        comparisons=comparisons,
        pareto=pareto_summary(
            [item.result for item in kept],
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
            method=method,
        ),
        cheapest=cheapest_meeting_slo(rows, baseline, comparisons),
        sources=sorted(s for row in rows for s in row.sources),
        warnings=warnings + _changed_config_warnings(keys),
    )


def _metric_values(result: ExperimentResult, served: bool) -> dict[str, float | None]:
    found = result.headline_metrics()
    return {**found, **result.serving_metrics()} if served else found


def aggregate_directory(root: str | Path, **options: Any) -> Summary:
    """The summary of the results tree `root` (options: `summarize_tree`'s)."""
    return summarize_tree(root, **options)[0]


def summarize_tree(
    root: str | Path, *, unreachable: Collection[str] = (), **options: Any
) -> tuple[Summary, LoadedResults]:
    """The one road from a results tree to its summary, for the campaign callback,
    `lem aggregate`, `lem compare` and `lem report` alike: every result file under
    `root`, aggregated (options: `aggregate_loaded`'s); with a `plan.json` in `root`,
    the planned experiments the tree has no outcome for, in the warnings. The results
    read come back too, for the report.
    """
    loaded = load_result_files(root)
    summary = aggregate_loaded(loaded, **options)
    summary.warnings += incomplete_notes(Path(root), unreachable)
    return summary, loaded


def _settled_on(host_dir: Path) -> set[str] | None:
    """The exp_ids a host's manifest (as fetched) records completed or failed; None
    when there is no readable manifest. Plain JSON: the tree is data, not a host."""
    try:
        entries = json.loads((host_dir / "manifest.json").read_text(encoding="utf-8"))["entries"]
        return {k for k, e in entries.items() if e.get("status") in ("completed", "failed")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def incomplete_notes(root: Path, unreachable: Collection[str] = ()) -> list[str]:
    """One line per host of the plan (`root/plan.json`) with experiments that have no
    outcome on the tree: none recorded completed or failed in its manifest (or, with
    no manifest, no result file)."""
    try:
        planned = json.loads((root / "plan.json").read_text(encoding="utf-8"))["experiments"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    left: dict[str, list[str]] = {}
    settled: dict[str, set[str] | None] = {}
    for experiment in planned:
        host, exp_id = experiment["host"], experiment["exp_id"]
        if host not in settled:
            settled[host] = _settled_on(root / "hosts" / host)
        known = settled[host]
        done = (
            exp_id in known
            if known is not None
            else (root / "hosts" / host / exp_id / "result.json").is_file()
        )
        if not done:
            left.setdefault(host, []).append(exp_id)
    return [
        f"{host}{' unreachable' if host in unreachable else ''}: "
        f"{len(exp_ids)} experiment(s) with no outcome on the controller yet "
        f"({', '.join(exp_ids)}); "
        "run the playbook again to finish them"
        for host, exp_ids in left.items()
    ]


def aggregate_loaded(
    loaded: LoadedResults,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
    baseline: str | None = None,
    detect: float | None = None,
) -> Summary:
    """Aggregate loaded results; the files that failed to load go into the summary."""
    summary = aggregate_results(
        loaded.results,
        sources=loaded.sources,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        method=method,
        baseline=baseline,
        detect=detect,
    )
    return summary.model_copy(update={"load_errors": loaded.errors})


def format_value(value: float | None) -> str:
    """A number as printed in tables: 4 significant digits, whole numbers from 1000 up."""
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_interval(ci: BootstrapCI) -> str:
    if ci.ci_lower is None or ci.ci_upper is None:
        return "n/a"
    return f"[{format_value(ci.ci_lower)}, {format_value(ci.ci_upper)}]"


def _metric_cells(ci: BootstrapCI) -> tuple[str, str, str, str]:
    return str(ci.n), format_value(ci.mean), format_interval(ci), format_value(ci.std)


def _notes(summary: Summary) -> list[str]:
    """Warnings to print under the table: per row, then for the whole summary."""
    notes = [
        f"{row.config_name} on {row.hardware}: {warning}"
        for row in summary.rows
        for warning in row.warnings
    ]
    return notes + summary.warnings + [f"not loaded: {error}" for error in summary.load_errors]


def method_note(summary: Summary) -> str:
    """One line naming the interval method, for tables and files."""
    resampling = (
        f", bootstrap exact up to {EXACT_MAX_N} cycles (every distinct resample), "
        f"else {summary.n_resamples} resamples, seed {summary.seed}"
    )
    if summary.method == "student-t":
        resampling = ""
    return f"{summary.confidence:.0%} intervals: {METHOD_LABELS[summary.method]}{resampling}"


def row_method(row: SummaryRow) -> str:
    """The methods this row's intervals used (one, unless metrics lost samples to nulls)."""
    used = sorted({ci.method for ci in row.metrics.values() if ci.n >= 2})
    return ", ".join(used) or "-"


def summary_table(summary: Summary) -> TextTable:
    """A table: one line per (config, hardware, metric)."""
    table = TextTable(title="LLenergyMeasure summary", caption=method_note(summary))
    for header in ("config", "hardware", "cycles", "CI method", "metric", "n", "mean"):
        table.add_column(header, justify="right" if header in {"cycles", "n", "mean"} else "left")
    table.add_column(f"{summary.confidence:.0%} CI")
    table.add_column("std", justify="right")
    for row in summary.rows:
        for index, metric in enumerate(summary.metrics):
            head = (row.config_name, row.hardware, str(row.n), row_method(row))
            table.add_row(
                *(head if index == 0 else ("",) * len(head)),
                METRIC_LABELS.get(metric, metric),
                *_metric_cells(row.metrics[metric]),
                end_section=index == len(summary.metrics) - 1,
            )
    return table


def _ratio_cells(ratio: PairedRatio, stated: bool) -> tuple[str, ...]:
    """Pairs, ratio, CI, excludes 1, detectable difference (and cycles needed, if stated)."""
    excludes = {True: "yes", False: "no", None: "n/a"}[ratio.excludes_one]
    detectable = "n/a" if ratio.detectable is None else f"{ratio.detectable:.1%}"
    cells = (
        str(ratio.ratio.n),
        format_value(ratio.ratio.mean),
        format_interval(ratio.ratio),
        excludes,
        detectable,
    )
    if not stated:
        return cells
    if ratio.difference_cv is None:
        return (*cells, "n/a")
    return (*cells, str(ratio.cycles_needed) if ratio.cycles_needed else f"> {MAX_CYCLES}")


def comparison_headers(summary: Summary) -> tuple[str, ...]:
    headers = ("config", "hardware", "metric", "pairs", "ratio", "CI", "excludes 1", "detectable")
    if summary.detect is None:
        return headers
    return (*headers, f"cycles for {summary.detect:.1%}")


DETECT_NOTE = (
    "detectable: the smallest difference these cycles detect "
    "(two-sided alpha 0.05, power 0.8, from the CV of the paired differences)"
)


def comparison_table(summary: Summary) -> TextTable:
    """A table: each config's paired ratio to the baseline, per metric."""
    table = TextTable(
        title=f"Paired ratios to baseline {summary.baseline}",
        caption="ratio = mean(config) / mean(baseline) over the cycles both ran; "
        f"the interval resamples those cycles together\n{DETECT_NOTE}",
    )
    for header in comparison_headers(summary):
        left = header in {"config", "hardware", "metric", "CI", "excludes 1"}
        table.add_column(header, justify="left" if left else "right")
    previous = None
    for ratio in summary.comparisons:
        key = (ratio.config_name, ratio.hardware)
        head = key if key != previous else ("", "")
        if previous is not None and key != previous:
            table.add_section()
        previous = key
        label = METRIC_LABELS.get(ratio.metric, ratio.metric)
        table.add_row(*head, label, *_ratio_cells(ratio, summary.detect is not None))
    return table


CHEAPEST_HEADERS = (
    "hardware",
    "SLO (p90)",
    "cheapest meeting it",
    "J / output token",
    "TTFT p90 (s)",
    "ITL p90 (s)",
    "J/token ratio to baseline",
    "also meet",
)
CHEAPEST_NOTE = (
    "least mean J/token among the server-mode configs whose p90 TTFT and p90 ITL intervals "
    "lie within the config's load.slo; the ratio to the baseline is paired by cycle"
)


def _with_interval(ci: BootstrapCI | None) -> str:
    if ci is None or ci.mean is None:
        return "n/a"
    interval = format_interval(ci)
    return format_value(ci.mean) + ("" if interval == "n/a" else f" {interval}")


def cheapest_cells(answer: CheapestMeetingSlo) -> tuple[str, ...]:
    """One line of the cheapest-config table (CHEAPEST_HEADERS)."""
    slo = f"TTFT <= {answer.slo['ttft_ms']:g} ms, ITL <= {answer.slo['itl_ms']:g} ms"
    if answer.pick is None:
        unsure = f"; unsure: {', '.join(answer.unsure)}" if answer.unsure else ""
        return (answer.hardware, slo, f"{answer.reason}{unsure}", *("n/a",) * 4, "")
    if answer.baseline is None:
        versus = "no baseline (--baseline)"
    elif answer.baseline == answer.pick:
        versus = "is the baseline"
    else:
        versus = f"{_with_interval(answer.versus_baseline)} vs {answer.baseline}"
    others = ", ".join(name for name in answer.meets if name != answer.pick)
    return (
        answer.hardware,
        slo,
        answer.pick,
        _with_interval(answer.energy),
        *(_with_interval(answer.latency[m]) for m in ("ttft_p90_s", "itl_p90_s")),
        versus,
        others or "-",
    )


def cheapest_table(summary: Summary) -> TextTable:
    table = TextTable(title="Cheapest config meeting the SLO", caption=CHEAPEST_NOTE)
    for header in CHEAPEST_HEADERS:
        table.add_column(header)
    for answer in summary.cheapest:
        table.add_row(*cheapest_cells(answer))
    return table


def _plain(*parts: TextTable | str) -> str:
    """Tables and lines as plain text (no colour codes, no trailing blanks), e.g. for Ansible."""
    return "".join(part.render() if isinstance(part, TextTable) else part + "\n" for part in parts)


def render_table(summary: Summary) -> str:
    """The summary table, the comparisons if any, and the warnings as plain text."""
    parts: list[TextTable | str] = [
        summary_table(summary) if summary.rows else "no results to aggregate"
    ]
    if summary.comparisons:
        parts.append(comparison_table(summary))
    if summary.cheapest:
        parts.append(cheapest_table(summary))
    parts += [f"warning: {note}" for note in _notes(summary)]
    return _plain(*parts)


def render_comparisons(summary: Summary) -> str:
    """Only the comparison table and the warnings, as plain text (`lem compare`)."""
    parts: list[TextTable | str] = [comparison_table(summary)]
    parts += [f"warning: {note}" for note in _notes(summary)]
    return _plain(*parts)


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(value)


def summary_csv(summary: Summary) -> str:
    """Tidy CSV: one line per (row, metric), full-precision numbers, empty for null."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in summary.rows:
        for metric in summary.metrics:
            ci = row.metrics[metric]
            writer.writerow(
                [
                    row.config_name,
                    row.config_hash or "",
                    row.backend,
                    row.hardware,
                    metric,
                    ci.n,
                    ci.n_dropped,
                    *(_csv_number(v) for v in (ci.mean, ci.std, ci.ci_lower, ci.ci_upper)),
                    ci.confidence,
                    ci.n_resamples,
                    ci.warning or "",
                    ";".join(e or "" for e in row.exp_ids),
                    ci.method,
                ]
            )
    return out.getvalue()


COMPARISON_CSV_COLUMNS = (
    "config_name",
    "hardware",
    "baseline",
    "metric",
    "pairs",
    "ratio",
    "ci_lower",
    "ci_upper",
    "excludes_one",
    "confidence",
    "method",
    "cycles",
    "difference_cv",
    "detectable",
    "cycles_needed",
)


def comparison_csv(summary: Summary) -> str:
    """Tidy CSV of the paired ratios: one line per (config, hardware, metric)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COMPARISON_CSV_COLUMNS)
    for ratio in summary.comparisons:
        ci = ratio.ratio
        writer.writerow(
            [
                ratio.config_name,
                ratio.hardware,
                ratio.baseline,
                ratio.metric,
                ci.n,
                *(_csv_number(v) for v in (ci.mean, ci.ci_lower, ci.ci_upper)),
                "" if ratio.excludes_one is None else str(ratio.excludes_one).lower(),
                ci.confidence,
                ci.method,
                ";".join(str(c) for c in ratio.cycles),
                _csv_number(ratio.difference_cv),
                _csv_number(ratio.detectable),
                "" if ratio.cycles_needed is None else ratio.cycles_needed,
            ]
        )
    return out.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(headers: Sequence[str], aligns: str, rows: list[Sequence[str]]) -> list[str]:
    """Markdown table lines; `aligns` holds one character per column, l or r."""
    rule = " | ".join("---:" if a == "r" else "---" for a in aligns)
    body = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return ["| " + " | ".join(headers) + " |", f"| {rule} |", *body]


def summary_markdown(summary: Summary) -> str:
    headers = ("config", "hardware", "cycles", "metric", "n", "mean")
    headers += (f"{summary.confidence:.0%} CI", "std")
    rows = [
        (
            row.config_name,
            row.hardware,
            str(row.n),
            METRIC_LABELS.get(metric, metric),
            *_metric_cells(row.metrics[metric]),
        )
        for row in summary.rows
        for metric in summary.metrics
    ]
    lines = [
        "# LLenergyMeasure summary",
        "",
        f"{method_note(summary)}; {len(summary.sources)} result files (listed in summary.json).",
        "",
        *_md_table(headers, "llrlrrlr", rows),
    ]
    if summary.comparisons:
        ratio_rows = [
            (
                r.config_name,
                r.hardware,
                METRIC_LABELS.get(r.metric, r.metric),
                *_ratio_cells(r, summary.detect is not None),
            )
            for r in summary.comparisons
        ]
        lines += [
            "",
            f"## Paired ratios to baseline {summary.baseline}",
            "",
            "mean(config) / mean(baseline) over the cycles both ran; the interval resamples "
            f"those cycles together. {DETECT_NOTE}.",
            "",
            *_md_table(
                headers := comparison_headers(summary), "lllrrllrr"[: len(headers)], ratio_rows
            ),
        ]
    if summary.pareto:
        lines += ["", *pareto_markdown(summary)]
    if summary.cheapest:
        cheapest = [cheapest_cells(answer) for answer in summary.cheapest]
        lines += ["", "## Cheapest config meeting the SLO", "", CHEAPEST_NOTE + ".", ""]
        lines += _md_table(CHEAPEST_HEADERS, "llllllll", cheapest)
    notes = _notes(summary)
    if notes:
        lines += ["", "## Warnings", "", *(f"- {_md_cell(note)}" for note in notes)]
    return "\n".join(lines) + "\n"


def pareto_markdown(summary: Summary) -> list[str]:
    """The energy-latency front of each knob sweep, as a markdown section."""
    rows = [
        (
            f"{p.model} / {p.backend}",
            p.hardware,
            p.config_name,
            ", ".join(f"{k}={v}" for k, v in sorted(p.gpu.items())) or "GPU as it is",
            f"{format_value(p.energy.mean)} {format_interval(p.energy)}",
            f"{format_value(p.latency.mean)} {format_interval(p.latency)}",
        )
        for p in summary.pareto
    ]
    latency = summary.pareto[0].latency_key
    headers = ("model / backend", "hardware", "config", "GPU setting", "J / token", latency)
    return [
        "## Energy-latency Pareto front of the GPU knob sweeps",
        "",
        f"Configs no other setting beats on both mean J/token and mean {latency}, per model, "
        f"backend and hardware; {summary.confidence:.0%} CI on both axes.",
        "",
        *_md_table(headers, "llllll", rows),
    ]


def write_summary(summary: Summary, out_dir: str | Path) -> list[Path]:
    """Write summary.json, .csv, .md (and comparison.csv with a baseline) atomically.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    files = {
        "summary.json": summary.model_dump_json(indent=2) + "\n",
        "summary.csv": summary_csv(summary),
        "summary.md": summary_markdown(summary),
    }
    if summary.baseline is not None:
        files[COMPARISON_FILE] = comparison_csv(summary)
    paths = [out_dir / name for name in files]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, text in zip(paths, files.values(), strict=True):
            atomic_write_text(path, text)
    except OSError as exc:
        raise LemError(f"{exc.filename or out_dir}: cannot write summary: {exc.strerror}") from None
    return paths
