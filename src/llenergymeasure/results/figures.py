"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg canvas).

Each function takes the loaded results (and the summary) and returns a `Figure`, or a
sentence saying why there is nothing to draw: a panel without data is words, never
empty axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.results.aggregate import METRIC_LABELS, Summary, SummaryRow
from llenergymeasure.results.recommend import ParetoPoint
from llenergymeasure.stats.bootstrap import BootstrapCI, bootstrap_ci_many

Panel = Figure | str
# Figures draw at most this many configs x hardware (the summary holds them all),
# and this many power traces: beyond that a figure is unreadable and slow to draw.
MAX_ROWS = 24
MAX_TRACES = 9
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# Latencies drawn against energy: (label, value of a result); CIs computed here.
LATENCIES: dict[str, Callable[[ExperimentResult], float | None]] = {
    "TTFT p50 (s)": lambda r: r.ttft.p50,
    "TTFT p99 (s)": lambda r: r.ttft.p99,
    "ITL mean (s)": lambda r: r.itl.mean,
}


@dataclass
class Groups:
    """Results per summary row (config, hardware, hash), in the summary's row order."""

    rows: list[SummaryRow]
    results: list[list[ExperimentResult]]

    @classmethod
    def of(cls, summary: Summary, results: Sequence[ExperimentResult]) -> Groups:
        by_exp_id = {r.identity.exp_id: r for r in results if r.identity.exp_id is not None}
        members = [[by_exp_id[e] for e in row.exp_ids if e in by_exp_id] for row in summary.rows]
        return cls(rows=list(summary.rows), results=members)


def label(row: SummaryRow) -> str:
    return row.config_name


def shown_rows(summary: Summary) -> list[SummaryRow]:
    """The rows the figures draw: all, or the MAX_ROWS lowest in J per output token
    (throughput where there is no energy), in the summary's order."""
    if len(summary.rows) <= MAX_ROWS:
        return list(summary.rows)
    metric = "j_per_output_token" if has_energy(summary) else "output_tokens_per_s"
    sign = 1.0 if metric == "j_per_output_token" else -1.0

    def rank(row: SummaryRow) -> float:
        mean = row.metrics[metric].mean
        return sign * mean if mean is not None else float("inf")

    best = {id(row) for row in sorted(summary.rows, key=rank)[:MAX_ROWS]}
    return [row for row in summary.rows if id(row) in best]


def has_energy(summary: Summary) -> bool:
    return any(row.metrics["energy_j"].n for row in summary.rows)


def no_energy_sentence(summary: Summary) -> str:
    sources = sorted({s for row in summary.rows for s in row.energy_sources})
    return (
        f"No energy was measured (energy source: {', '.join(sources) or 'none'}): this host "
        "had neither NVML GPU energy nor readable RAPL counters, so there is nothing to plot."
    )


def _errorbar(ci: BootstrapCI) -> tuple[float, float, float]:
    """(mean, minus, plus) for error bars; zeros where there is no interval."""
    if ci.mean is None:
        return np.nan, 0.0, 0.0
    if ci.ci_lower is None or ci.ci_upper is None:
        return ci.mean, 0.0, 0.0
    return ci.mean, ci.mean - ci.ci_lower, ci.ci_upper - ci.mean


def _bars(ax: Axes, rows: Sequence[SummaryRow], metrics: Sequence[str]) -> None:
    """Grouped bars: one group per row, one bar per metric, CI whiskers."""
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for i, metric in enumerate(metrics):
        bars = np.array([_errorbar(row.metrics[metric]) for row in rows])
        ax.bar(
            x + (i - (len(metrics) - 1) / 2) * width,
            bars[:, 0],
            width,
            yerr=bars[:, 1:].T,
            capsize=4,
            color=COLOURS[i % len(COLOURS)],
            label=METRIC_LABELS.get(metric, metric),
        )
    ax.set_xticks(x, [label(r) for r in rows], rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _by_hardware(rows: Sequence[SummaryRow]) -> dict[str, list[SummaryRow]]:
    grouped: dict[str, list[SummaryRow]] = {}
    for row in rows:
        grouped.setdefault(row.hardware, []).append(row)
    return grouped


def _figure(
    n_panels: int, width: float = 5.5, height: float = 4.0, columns: int = 3
) -> tuple[Figure, list[Axes]]:
    """A figure with `n_panels` axes, `columns` to a line; spare cells of the grid removed."""
    n_columns = min(n_panels, columns)
    n_lines = -(-n_panels // n_columns)
    figure = Figure(figsize=(width * n_columns, height * n_lines), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg raster backend, whatever matplotlib's default is
    axes = list(figure.subplots(n_lines, n_columns, squeeze=False).ravel())
    for spare in axes[n_panels:]:
        spare.remove()
    return figure, axes[:n_panels]


def energy_per_token(summary: Summary) -> Panel:
    """J per output token, raw and idle-adjusted, per config; one panel per GPU model."""
    if not has_energy(summary):
        return no_energy_sentence(summary)
    grouped = _by_hardware(summary.rows)
    figure, axes = _figure(len(grouped))
    for ax, (hardware, rows) in zip(axes, grouped.items(), strict=True):
        _bars(ax, rows, ["j_per_output_token", "adjusted_j_per_output_token"])
        ax.set_title(hardware, fontsize=10)
        ax.set_ylabel("J / output token")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Energy per output token ({summary.confidence:.0%} CI)")
    return figure


def throughput(summary: Summary) -> Panel:
    """Output tokens per second per config; one panel per hardware."""
    grouped = _by_hardware(summary.rows)
    figure, axes = _figure(len(grouped))
    for ax, (hardware, rows) in zip(axes, grouped.items(), strict=True):
        _bars(ax, rows, ["output_tokens_per_s"])
        ax.set_title(hardware, fontsize=10)
        ax.set_ylabel("output tokens / s")
    figure.suptitle(f"Throughput ({summary.confidence:.0%} CI)")
    return figure


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (lower is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox <= x and oy <= y) and (ox < x or oy < y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def energy_vs_latency(summary: Summary, groups: Groups) -> Panel:
    """J per output token against each latency, with CI whiskers and the Pareto front."""
    if not has_energy(summary):
        return no_energy_sentence(summary)
    samples = [
        [latency(r) for r in members]
        for latency in LATENCIES.values()
        for members in groups.results
    ]
    cis = iter(bootstrap_ci_many(samples, summary.confidence, summary.n_resamples, summary.seed))
    figure, axes = _figure(len(LATENCIES), width=4.6)
    energy = [_errorbar(row.metrics["j_per_output_token"]) for row in groups.rows]
    for ax, name in zip(axes, LATENCIES, strict=True):
        latency = [_errorbar(next(cis)) for _ in groups.rows]
        points: list[tuple[float, float]] = []
        for i, row in enumerate(groups.rows):
            (x, xm, xp), (y, ym, yp) = latency[i], energy[i]
            ax.errorbar(
                x,
                y,
                xerr=[[xm], [xp]],
                yerr=[[ym], [yp]],
                fmt="o",
                capsize=3,
                color=COLOURS[i % len(COLOURS)],
                label=f"{label(row)} ({row.hardware})",
            )
            points.append((x, y))
        drawable = [i for i, p in enumerate(points) if np.isfinite(p).all()]
        if not drawable:
            ax.text(
                0.5, 0.5, f"{name}: not measured", ha="center", va="center", transform=ax.transAxes
            )
            ax.set_axis_off()
            continue
        front = [drawable[i] for i in pareto_front([points[i] for i in drawable])]
        ax.plot(  # dashed line and open squares: one point alone is still marked
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "k--s",
            lw=1,
            markersize=12,
            markerfacecolor="none",
            label="Pareto front",
        )
        ax.set_xlabel(name)
        ax.set_ylabel("J / output token")
        ax.grid(alpha=0.3)
    if len(groups.rows) <= len(COLOURS) * 2:
        axes[0].legend(fontsize=7)
    figure.suptitle("Energy per token against latency (lower left is better)")
    return figure


def knob_pareto(summary: Summary) -> Panel:
    """The energy-latency front of each GPU knob sweep, CI whiskers on both axes, each point
    named by its GPU setting; one panel per (model, backend, hardware)."""
    groups: dict[tuple[str, str, str], list[ParetoPoint]] = {}
    for point in summary.pareto:
        groups.setdefault((point.model, point.backend, point.hardware), []).append(point)
    if not groups:
        return "No GPU knob sweep in these results: no energy-latency front to draw."
    figure, axes = _figure(len(groups), width=5.2)
    for ax, ((model, backend, hardware), points) in zip(axes, groups.items(), strict=True):
        xs, ys = [], []
        for point in points:
            (x, xm, xp), (y, ym, yp) = _errorbar(point.latency), _errorbar(point.energy)
            ax.errorbar(x, y, xerr=[[xm], [xp]], yerr=[[ym], [yp]], fmt="o", capsize=3)
            setting = ", ".join(f"{k}={v}" for k, v in sorted(point.gpu.items()))
            ax.annotate(
                setting or "GPU as it is",
                (x, y),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
            xs.append(x)
            ys.append(y)
        ax.plot(xs, ys, "k--", lw=1)
        ax.set_title(f"{model} / {backend}\n{hardware}", fontsize=9)
        ax.set_xlabel(points[0].latency_key.replace("_ms", " (ms)"))
        ax.set_ylabel("J / output token")
        ax.grid(alpha=0.3)
    figure.suptitle(f"GPU knob sweep: energy-latency Pareto front ({summary.confidence:.0%} CI)")
    return figure


def _trace_of(members: Sequence[ExperimentResult]) -> ExperimentResult | None:
    return next((r for r in members if r.power.samples_w), None)


def power_traces(groups: Groups) -> Panel:
    """One cycle's power trace per config: warmup before, window shaded, idle baseline."""
    traced = [(row, _trace_of(m)) for row, m in zip(groups.rows, groups.results, strict=True)]
    traced = [(row, r) for row, r in traced if r is not None][:MAX_TRACES]
    if not traced:
        return (
            "No power samples in these results (power is sampled through NVML on GPU "
            "hosts only), so there is no trace to plot."
        )
    figure, axes = _figure(len(traced), width=4.6)
    for ax, (row, result) in zip(axes, traced, strict=True):
        timing, power = result.timing, result.power
        ax.axvspan(-timing.warmup_seconds, 0, color="#ffd580", alpha=0.5, label="warmup")
        ax.axvspan(0, timing.window_seconds, color="#cce5ff", alpha=0.6, label="measurement window")
        ax.plot(power.samples_t, power.samples_w, color="#1f77b4", lw=1, label="GPU power")
        if result.energy.idle_baseline_power_w is not None:
            ax.axhline(
                result.energy.idle_baseline_power_w, color="k", ls="--", lw=1, label="idle baseline"
            )
        ax.set_title(f"{label(row)} ({row.hardware}), cycle {result.identity.cycle}", fontsize=9)
        ax.set_xlabel("seconds from window start")
        ax.set_ylabel("W")
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle("Power trace of one cycle per config")
    return figure


def cycles_in_run_order(groups: Groups, energy: bool) -> Panel:
    """Every cycle's value in the order the campaign ran them, a line per config."""
    metrics = ["j_per_output_token", "output_tokens_per_s"] if energy else ["output_tokens_per_s"]
    everything = sorted(
        (r for members in groups.results for r in members), key=lambda r: r.timing.started_at
    )
    order = {id(r): k for k, r in enumerate(everything, start=1)}
    figure, axes = _figure(len(metrics), width=6.0)
    for ax, metric in zip(axes, metrics, strict=True):
        for i, (row, members) in enumerate(zip(groups.rows, groups.results, strict=True)):
            runs = sorted(members, key=lambda r: order[id(r)])
            ax.plot(
                [order[id(r)] for r in runs],
                [r.headline_metrics()[metric] or np.nan for r in runs],
                "o-",
                color=COLOURS[i % len(COLOURS)],
                label=f"{label(row)} ({row.hardware})",
            )
        ax.set_xlabel("position in the campaign's run order")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
    if len(groups.rows) <= len(COLOURS) * 2:
        axes[0].legend(fontsize=7)
    figure.suptitle("Every cycle in run order (a trend shows drift or heating)")
    return figure


# Server mode: the latency curves drawn against the achieved rate (colour: quantity,
# line style: percentile).
SERVER_LATENCIES = ("ttft", "itl", "e2e")
SERVER_PERCENTILES = {"p50": ":", "p90": "-", "p99": "--"}
_RATE_KEYS = {"request_rate", "max_concurrency"}


@dataclass
class ServerSeries:
    """The rows of one server config swept over its load (rates), by achieved rate."""

    label: str
    rows: list[SummaryRow]


def _load_free(config: dict[str, object]) -> dict[str, object]:
    """A config flattened to dotted keys, less its name and its load rate."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat[prefix[:-1]] = value

    walk("", config)
    flat.pop("config_name", None)
    return {k: v for k, v in flat.items() if k.removeprefix("load.") not in _RATE_KEYS}


def server_series(
    summary: Summary, results: Sequence[ExperimentResult]
) -> dict[tuple[str, str, str], list[ServerSeries]]:
    """(model, backend, hardware) -> the server-mode configs there, each over its rates."""
    groups = Groups.of(summary, results)
    found: dict[tuple[str, str, str], dict[str, tuple[dict[str, object], list[SummaryRow]]]] = {}
    for row, members in zip(groups.rows, groups.results, strict=True):
        if not members or members[0].serving is None:
            continue
        config = _load_free(members[0].config)
        key = (str(config.get("model.path", "?")), row.backend, row.hardware)
        series = found.setdefault(key, {})
        series.setdefault(repr(sorted(config.items())), (config, []))[1].append(row)
    out = {}
    for key, series in sorted(found.items()):
        configs = [config for config, _ in series.values()]
        differing = sorted(
            {k for c in configs for k in c if any(o.get(k) != c.get(k) for o in configs)}
        )
        out[key] = [
            ServerSeries(
                label=", ".join(f"{k}={config.get(k)}" for k in differing) or "config",
                rows=sorted(rows, key=lambda r: r.metrics["achieved_request_rate"].mean or 0.0),
            )
            for config, rows in series.values()
        ]
    return out


def _errors(cis: Sequence[BootstrapCI]) -> tuple[list[float], np.ndarray]:
    """Means and the asymmetric error bars of their intervals (0 where there is none)."""
    means = [ci.mean if ci.mean is not None else np.nan for ci in cis]
    low = [
        m - ci.ci_lower if ci.ci_lower is not None else 0.0
        for m, ci in zip(means, cis, strict=True)
    ]
    high = [
        ci.ci_upper - m if ci.ci_upper is not None else 0.0
        for m, ci in zip(means, cis, strict=True)
    ]
    return means, np.array([low, high])


def _curve(axes: Axes, series: ServerSeries, metric: str, **style: object) -> None:
    rate_means, rate_err = _errors([r.metrics["achieved_request_rate"] for r in series.rows])
    means, err = _errors([r.metrics[metric] for r in series.rows])
    axes.errorbar(rate_means, means, yerr=err, xerr=rate_err, capsize=3, marker="o", **style)  # type: ignore[arg-type]


def _latency_styles(count: int, index: int) -> dict[str, str]:
    """One config: p50, p90, p99 by line style; several: p90 only, line style per config."""
    if count == 1:
        return SERVER_PERCENTILES
    return {"p90": ("-", "--", ":", "-.")[index % 4]}


def server_curves(group: str, series: Sequence[ServerSeries], energy: bool) -> Figure:
    """Three panels against the achieved request rate, each point with its CI: J/token,
    latency percentiles, SLO attainment."""
    figure = Figure(figsize=(15, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    joules, latency, slo = figure.subplots(1, 3)
    figure.suptitle(f"Server mode: {group}")
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        if energy:
            _curve(joules, one, "j_per_output_token", color=colour, label=one.label)
        _curve(slo, one, "slo_attainment_pct", color=colour, label=one.label)
        for q_index, quantity in enumerate(SERVER_LATENCIES):
            for stat, line in _latency_styles(len(series), index).items():
                _curve(
                    latency,
                    one,
                    f"{quantity}_{stat}_s",
                    color=COLOURS[q_index],
                    linestyle=line,
                    markersize=3,
                    label=f"{quantity.upper()} {stat}"
                    + (f" ({one.label})" if len(series) > 1 else ""),
                )
    if not energy:
        joules.text(0.5, 0.5, "no energy meter:\nJ/token not measured", ha="center", va="center")
    joules.set(title="J / output token", ylabel="J / output token")
    latency.set(title="Latency percentiles", ylabel="seconds", yscale="log")
    slo.set(title="SLO attainment", ylabel="% of requests meeting both deadlines", ylim=(0, 105))
    for axes in (joules, latency, slo):
        axes.set_xlabel("achieved request rate (requests/s)")
        axes.grid(alpha=0.3)
    if energy:
        joules.legend(fontsize=8)
    latency.legend(fontsize=7, ncol=2 if len(series) > 1 else 1)
    slo.legend(fontsize=8)
    return figure
