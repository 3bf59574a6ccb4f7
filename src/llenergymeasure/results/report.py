"""`report.html`: a campaign's figures, tables and facts in one self-contained file.

The figures are PNG files under `figures/` next to the report and the same bytes inlined
as base64 data URIs, so the page needs no network and no other file. Panels without data
(no energy source, no power samples) are sentences. See docs/statistics.md.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llenergymeasure import __version__
from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.errors import LemError
from llenergymeasure.files import atomic_write_bytes, atomic_write_text
from llenergymeasure.host.manifest import ManifestError, load_manifest
from llenergymeasure.results import figures
from llenergymeasure.results.aggregate import (
    CHEAPEST_HEADERS,
    CHEAPEST_NOTE,
    METRIC_LABELS,
    Summary,
    cheapest_cells,
    format_interval,
    format_value,
    method_note,
    row_method,
    summarize_tree,
)
from llenergymeasure.results.recommend import recommend, recommendation_lines
from llenergymeasure.stats.bootstrap import BootstrapCI, Method

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
# Metrics in the report's summary table (the full set is in summary.md).
TABLE_METRICS = (
    "j_per_output_token",
    "adjusted_j_per_output_token",
    "wh_per_1k_requests",
    "output_tokens_per_s",
    "ttft_mean_s",
    "latency_p99_s",
)
# Server-mode rows' own table (the rest of SERVING_METRICS is in summary.md).
SERVER_TABLE_METRICS = (
    "achieved_request_rate",
    "output_tokens_per_s",
    "ttft_p90_s",
    "itl_p90_s",
    "e2e_p90_s",
    "slo_attainment_pct",
    "goodput_rps",
    "mean_in_flight",
    "window_s",
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}
td.num{text-align:right}img{max-width:100%;border:1px solid #eee}
.note{background:#fff7e0;border-left:4px solid #f0b000;padding:.6em 1em}
.meta{color:#666;font-size:.85em}
"""


@dataclass
class Report:
    """What `write_report` wrote."""

    html: Path
    figures: list[Path] = field(default_factory=list)


@dataclass
class _Section:
    title: str
    body: str


def _png(figure: figures.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(c)}</td>'
            if i in numeric
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _cell(ci: BootstrapCI, mark: str = "") -> str:
    """'mean [low, high]' in one cell."""
    if ci.mean is None:
        return "n/a"
    interval = format_interval(ci)
    return format_value(ci.mean) + ("" if interval == "n/a" else f" {interval}") + mark


def summary_section(summary: Summary) -> _Section:
    """One line per config and hardware, one column per headline metric: mean [CI]."""
    headers = ["config", "hardware", "cycles", "CI method"]
    headers += [METRIC_LABELS[m] for m in TABLE_METRICS]
    rows = [
        [row.config_name, row.hardware, str(row.n), row_method(row)]
        + [_cell(row.metrics[m]) for m in TABLE_METRICS]
        for row in summary.rows
    ]
    note = html.escape(method_note(summary))
    text = f"<p>Cells: mean [CI]. {note}. Every metric is in summary.md.</p>"
    return _Section("Summary", text + _table(headers, rows, {2}))


def comparison_section(summary: Summary) -> _Section | None:
    """One line per config and hardware: ratio [CI] to the baseline per metric."""
    if summary.baseline is None:
        return None
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in summary.comparisons:
        mark = " *" if r.excludes_one else ""
        cells.setdefault((r.config_name, r.hardware), {})[r.metric] = _cell(r.ratio, mark)
    headers = ["config", "hardware", *(METRIC_LABELS[m] for m in TABLE_METRICS)]
    rows = [[*key, *(found.get(m, "n/a") for m in TABLE_METRICS)] for key, found in cells.items()]
    text = (
        "<p>ratio [CI] = mean(config) / mean(baseline) over the cycles both ran; the interval "
        "resamples those cycles together, so drift shared by a cycle cancels. * : the interval "
        "excludes 1. Every metric is in summary.md and comparison.csv.</p>"
    )
    body = text + (_table(headers, rows, set()) if rows else _note("Nothing to compare."))
    return _Section(f"Paired ratios to baseline {summary.baseline}", body)


def cheapest_section(summary: Summary) -> _Section | None:
    """Server mode: per hardware, the least-J/token config meeting its SLO (or why none)."""
    if not summary.cheapest:
        return None
    rows = [cheapest_cells(answer) for answer in summary.cheapest]
    text = (
        f"<p>{html.escape(CHEAPEST_NOTE)}; cells: mean [CI]. Each point of the server "
        "figures above is one of these configs at one rate.</p>"
    )
    return _Section("Cheapest config meeting the SLO", text + _table(CHEAPEST_HEADERS, rows, set()))


def server_section(summary: Summary) -> _Section | None:
    """One line per server-mode config and hardware: its load figures, mean [CI]."""
    rows = [row for row in summary.rows if row.unstable_windows is not None]
    if not rows:
        return None
    headers = ["config", "hardware", "cycles", *(METRIC_LABELS[m] for m in SERVER_TABLE_METRICS)]
    headers.append("unstable windows")
    cells = [
        [row.config_name, row.hardware, str(row.n)]
        + [_cell(row.metrics[m]) for m in SERVER_TABLE_METRICS]
        + [f"{row.unstable_windows} of {row.n}"]
        for row in summary.rows
        if row in rows
    ]
    text = "<p>Cells: mean [CI] over cycles, inside each cycle's steady window.</p>"
    return _Section("Server mode", text + _table(headers, cells, {2}))


def _joined(values: Sequence[str | None]) -> str:
    found = sorted({v for v in values if v})
    return ", ".join(found) or "n/a"


def manifest_failures(root: Path) -> list[str]:
    """Failed experiments recorded in the manifests under `root`."""
    lines = []
    for path in sorted(root.rglob("manifest.json")):
        try:
            manifest = load_manifest(path)
        except ManifestError as exc:
            lines.append(str(exc))
            continue
        lines += [
            f"{e.exp_id} on {manifest.host or '?'} (attempts {e.attempts}): {e.error}"
            for e in manifest.entries.values()
            if e.status == "failed"
        ]
    return lines


def facts_section(
    results: Sequence[ExperimentResult], summary: Summary, failures: Sequence[str]
) -> _Section:
    envs = [r.environment for r in results]
    versions = sorted({f"{k} {v}" for e in envs for k, v in e.versions.items()})
    facts = [
        ("campaign", _joined([r.identity.campaign_name for r in results])),
        ("results", str(len(results))),
        ("hosts", _joined([r.identity.host or r.environment.hostname for r in results])),
        ("hardware", _joined([e.hardware for e in envs])),
        ("GPU drivers", _joined([e.driver_version for e in envs])),
        ("CUDA", _joined([e.cuda_version for e in envs])),
        ("engine versions", ", ".join(versions) or "n/a"),
        ("lem versions", _joined([e.lem_version for e in envs])),
        ("energy sources", _joined([r.energy.source for r in results])),
        ("first start, last finish", _span(results)),
    ]
    body = _table(["fact", "value"], facts, set())
    warnings = [
        f"{row.config_name} on {row.hardware}: {w}" for row in summary.rows for w in row.warnings
    ]
    counted = Counter(w for r in results for w in r.warnings)
    warnings += [f"{w} ({n} result(s))" for w, n in sorted(counted.items())]
    warnings += summary.warnings + [f"not loaded: {e}" for e in summary.load_errors]
    body += "<h3>Warnings</h3>" + _list(warnings, "none")
    body += "<h3>Failures</h3>" + _list(list(failures), "none recorded")
    return _Section("Campaign facts", body)


def _span(results: Sequence[ExperimentResult]) -> str:
    if not results:
        return "n/a"
    first = min(r.timing.started_at for r in results)
    return f"{first} to {max(r.timing.finished_at for r in results)}"


def _list(items: Sequence[str], empty: str) -> str:
    if not items:
        return f"<p>{html.escape(empty)}</p>"
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _panels(
    summary: Summary, results: Sequence[ExperimentResult]
) -> dict[str, tuple[str, figures.Panel]]:
    """name -> (title, figure or sentence), in page order."""
    energy_all = figures.has_energy(summary)
    served = {
        f"server_{index}": (
            f"Server mode against the achieved rate: {' / '.join(key)}",
            figures.server_curves(" / ".join(key), series, energy_all),
        )
        for index, (key, series) in enumerate(figures.server_series(summary, results).items())
    }
    summary = summary.model_copy(update={"rows": figures.shown_rows(summary)})
    groups = figures.Groups.of(summary, results)
    energy = figures.has_energy(summary)
    return {
        **served,
        "energy_per_token": ("Energy per output token", figures.energy_per_token(summary)),
        "energy_vs_latency": ("Energy against latency", figures.energy_vs_latency(summary, groups)),
        **(
            {"knob_pareto": ("GPU knob sweep: Pareto front", figures.knob_pareto(summary))}
            if summary.pareto
            else {}
        ),
        "throughput": ("Throughput", figures.throughput(summary)),
        "power_traces": ("Power traces", figures.power_traces(groups)),
        "cycles": ("Cycles in run order", figures.cycles_in_run_order(groups, energy)),
    }


def recommendation_section(
    summary: Summary, results: Sequence[ExperimentResult], slo: dict[str, float]
) -> _Section:
    """`lem recommend`'s answer for each (model, backend, hardware), for the SLO given."""
    answers = recommend(
        results,
        slo,
        baseline=summary.baseline,
        confidence=summary.confidence,
        n_resamples=summary.n_resamples,
        seed=summary.seed,
    )
    blocks = []
    for answer in answers:
        lines = recommendation_lines(answer)
        items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in lines[1:])
        body = f"<p><b>{html.escape(lines[0])}</b></p><ul>{items}</ul>"
        # an answer the evidence cannot back is shown as a warning note
        blocks.append(body if answer.decided else f'<div class="note">{body}</div>')
    return _Section("Recommendation (cheapest config meeting the SLO)", "".join(blocks))


def render_report(
    summary: Summary,
    results: Sequence[ExperimentResult],
    failures: Sequence[str] = (),
    slo: dict[str, float] | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The HTML page and the PNG bytes of its figures by file name."""
    pngs: dict[str, bytes] = {}
    sections = []
    shown = len(figures.shown_rows(summary))
    if shown < len(summary.rows):
        best = "lowest J per output token" if figures.has_energy(summary) else "highest throughput"
        sections.append(
            _Section(
                "Figures",
                _note(
                    f"The figures show the {shown} of {len(summary.rows)} configs x hardware "
                    f"with the {best} (power traces: the first {figures.MAX_TRACES}); every "
                    "config is in the tables below and in summary.md."
                ),
            )
        )
    for name, (title, panel) in _panels(summary, results).items():
        if isinstance(panel, str):
            sections.append(_Section(title, _note(panel)))
            continue
        pngs[f"{name}.png"] = data = _png(panel)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        sections.append(_Section(title, f'<img alt="{html.escape(title)}" src="{uri}">'))
    first_figure = 1 if shown == len(summary.rows) else 2
    sections.insert(first_figure, summary_section(summary))
    comparison = comparison_section(summary)
    if comparison is not None:
        sections.insert(first_figure + 1, comparison)
    for extra in (server_section(summary), cheapest_section(summary)):
        if extra is not None:
            sections.insert(first_figure, extra)
    if slo:
        sections.insert(first_figure, recommendation_section(summary, results, slo))
    sections.append(facts_section(results, summary, failures))
    campaign = _joined([r.identity.campaign_name for r in results])
    page = "".join(f"<h2>{html.escape(s.title)}</h2>\n{s.body}\n" for s in sections)
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>LLenergyMeasure report: {html.escape(campaign)}</title>"
        f"<style>{STYLE}</style></head><body>\n"
        f"<h1>LLenergyMeasure report: {html.escape(campaign)}</h1>\n"
        f'<p class="meta">{len(results)} results, {len(summary.rows)} configs x hardware '
        f"(lem {html.escape(__version__)}).</p>\n{page}</body></html>\n"
    )
    return document, pngs


def write_report_files(
    summary: Summary,
    results: Sequence[ExperimentResult],
    out_dir: str | Path,
    failures: Sequence[str] = (),
    slo: dict[str, float] | None = None,
) -> Report:
    """Write report.html and figures/*.png for an aggregated summary into `out_dir`."""
    out = Path(out_dir)
    document, pngs = render_report(summary, results, failures, slo)
    report = Report(html=out / REPORT_FILE)
    try:
        (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            path = out / FIGURES_DIR / name
            atomic_write_bytes(path, data)
            report.figures.append(path)
        atomic_write_text(report.html, document)
    except OSError as exc:
        raise LemError(f"{exc.filename or out}: cannot write the report: {exc.strerror}") from None
    return report


def write_report(
    root: str | Path,
    out_dir: str | Path | None = None,
    *,
    baseline: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 42,
    method: Method = "auto",
    slo: dict[str, float] | None = None,
) -> Report:
    """Read the results under `root` and write report.html and figures/*.png to `out_dir`.

    Failures come from the manifest.json files under `root`. With `slo`, the report names
    the cheapest config meeting it (results/recommend.py).
    """
    root = Path(root)
    summary, loaded = summarize_tree(
        root,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        method=method,
        baseline=baseline,
    )
    if not loaded.results:
        raise LemError(f"{root}: no readable result.json found")
    out = Path(out_dir) if out_dir is not None else root
    return write_report_files(summary, loaded.results, out, manifest_failures(root), slo)
