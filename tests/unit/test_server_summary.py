"""Server mode in the summary (issue 19): every serving metric with its interval, the
unstable-window count, the cheapest config meeting the SLO, and the rate curves' points.

The results are synthetic server-mode result.json files built from the schema models
(tests/fixtures/results.py: 2 configs x 4 rates x 3 cycles on an A100, or on a CPU
with no energy meter); expected numbers are computed here from the files' own values.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from fixtures.results import (
    SERVER_CONFIGS,
    SERVER_RATES,
    read_result,
    server_config_name,
    server_result,
    write_result,
    write_server_campaign,
)
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.contracts.result import HEADLINE_METRICS, SERVING_METRICS
from llenergymeasure.results import figures
from llenergymeasure.results.aggregate import aggregate_directory, render_table

ENERGY_METRICS = {
    "serving_j_per_output_token",
    "serving_j_per_request",
    "serving_wh_per_1k_requests",
}


def _row(summary: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(row for row in summary["rows"] if row["config_name"] == name)


def test_every_server_metric_has_its_interval_in_summary_json(tmp_path: Path) -> None:
    paths = write_server_campaign(tmp_path, cycles=3)
    result = CliRunner().invoke(app, ["aggregate", str(tmp_path), "--resamples", "500"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"] == [*HEADLINE_METRICS, *SERVING_METRICS]
    name = server_config_name("qwen-seqs8", 4.0)
    row = _row(summary, name)
    served = [read_result(p).serving_metrics() for p in paths if p.parent.name.count(name + "__")]
    assert len(served) == 3
    for metric in SERVING_METRICS:
        ci = row["metrics"][metric]
        assert ci["n"] == 3, metric
        assert ci["mean"] == pytest.approx(statistics.fmean(v[metric] for v in served)), metric
        assert ci["ci_lower"] is not None and ci["ci_upper"] is not None, metric
        assert ci["ci_lower"] <= ci["mean"] <= ci["ci_upper"], metric
    assert row["unstable_windows"] == 0
    # each percentile is the one of its distribution in the files (not another's)
    results = [read_result(p) for p in paths if p.parent.name.count(name + "__")]
    for quantity, field in (("ttft", "ttft"), ("itl", "itl"), ("e2e", "e2e_latency")):
        for stat in ("p50", "p90", "p99"):
            by_hand = statistics.fmean(getattr(getattr(r.serving, field), stat) for r in results)
            assert row["metrics"][f"{quantity}_{stat}_s"]["mean"] == pytest.approx(by_hand)
    assert "achieved requests/s" in result.stdout and "SLO attainment (%)" in result.stdout


def test_without_an_energy_meter_the_energy_metrics_stay_null(tmp_path: Path) -> None:
    write_server_campaign(tmp_path, cycles=3, energy=False)
    summary = aggregate_directory(tmp_path, n_resamples=200)
    for row in summary.rows:
        for metric in SERVING_METRICS:
            ci = row.metrics[metric]
            assert (ci.mean is None) == (metric in ENERGY_METRICS), metric
    [answer] = summary.cheapest
    assert answer.pick is None and "no energy meter" in (answer.reason or "")
    assert "no energy meter" in render_table(summary)


def test_an_offline_summary_has_no_server_columns(tmp_path: Path) -> None:
    from fixtures.results import make_result

    for cycle in (1, 2, 3):
        write_result(tmp_path, make_result("tiny", cycle))
    summary = aggregate_directory(tmp_path, n_resamples=200)
    assert summary.metrics == list(HEADLINE_METRICS) and summary.cheapest == []
    assert summary.rows[0].unstable_windows is None
    assert "SLO" not in render_table(summary)


def test_a_row_whose_cycles_had_unstable_windows_says_so(tmp_path: Path) -> None:
    for cycle in (1, 2, 3):
        write_result(tmp_path, server_result("qwen-seqs8", 2.0, cycle, unstable=cycle == 2))
    [row] = aggregate_directory(tmp_path, n_resamples=200).rows
    assert row.unstable_windows == 1
    assert any("1 of 3 cycle(s) had an unstable steady-state window" in w for w in row.warnings)


def test_the_cheapest_config_meeting_the_slo_is_picked_with_its_ratio_to_the_baseline(
    tmp_path: Path,
) -> None:
    write_server_campaign(tmp_path, cycles=3)
    baseline = server_config_name("qwen-seqs8", 1.0)
    summary = aggregate_directory(tmp_path, n_resamples=500, baseline=baseline)
    [answer] = summary.cheapest
    # by hand: the configs whose p90 TTFT and ITL intervals lie within the SLO, then least J/token
    meeting = [
        row
        for row in summary.rows
        if all(
            (ci := row.metrics[metric]).ci_upper is not None and ci.ci_upper <= bound / 1000
            for metric, bound in (("ttft_p90_s", 500.0), ("itl_p90_s", 60.0))
        )
    ]
    best = min(meeting, key=lambda row: row.metrics["j_per_output_token"].mean or 0.0)
    assert answer.pick == best.config_name == server_config_name("qwen-seqs32", 4.0)
    assert sorted(answer.meets) == sorted(row.config_name for row in meeting)
    [ratio] = [
        c
        for c in summary.comparisons
        if c.config_name == answer.pick and c.metric == "j_per_output_token"
    ]
    assert answer.versus_baseline == ratio.ratio and ratio.ratio.mean is not None
    assert ratio.ratio.mean < 1.0
    assert f"vs {baseline}" in render_table(summary)


def test_a_config_whose_interval_straddles_the_slo_is_unsure_not_picked(tmp_path: Path) -> None:
    # qwen-seqs32-r4's p90 ITL interval is about [41.5, 46.9] ms: a 45 ms SLO cuts it
    slo = {"ttft_ms": 500.0, "itl_ms": 45.0}
    for name in SERVER_CONFIGS:
        for rate in SERVER_RATES:
            for cycle in (1, 2, 3):
                write_result(tmp_path, server_result(name, rate, cycle, slo=slo))
    summary = aggregate_directory(tmp_path, n_resamples=200)
    [answer] = summary.cheapest
    straddling = summary.rows[[r.config_name for r in summary.rows].index("qwen-seqs32-r4")]
    itl = straddling.metrics["itl_p90_s"]
    assert itl.mean is not None and itl.ci_upper is not None
    assert itl.mean < 0.045 < itl.ci_upper
    assert answer.unsure == ["qwen-seqs32-r4"] and "qwen-seqs32-r4" not in answer.meets
    assert answer.pick == "qwen-seqs32-r2"


def test_none_meets_a_slo_no_config_can_keep(tmp_path: Path) -> None:
    for name in SERVER_CONFIGS:
        for rate in SERVER_RATES:
            for cycle in (1, 2, 3):
                tight = {"ttft_ms": 1.0, "itl_ms": 1.0}
                write_result(tmp_path, server_result(name, rate, cycle, slo=tight))
    summary = aggregate_directory(tmp_path, n_resamples=200)
    [answer] = summary.cheapest
    assert answer.pick is None and answer.meets == []
    assert "none meets the SLO" in render_table(summary)


def test_the_rate_curves_points_are_the_rows_by_achieved_rate(tmp_path: Path) -> None:
    paths = write_server_campaign(tmp_path, cycles=3)
    summary = aggregate_directory(tmp_path, n_resamples=200)
    summary.rows.reverse()  # the curves order points by achieved rate, not by row
    results = [read_result(p) for p in paths]
    [(key, series)] = figures.server_series(summary, results).items()
    assert key == ("Qwen/Qwen2.5-0.5B", "pytorch", "1x NVIDIA A100-SXM4-80GB")
    assert sorted(s.label for s in series) == ["pytorch.batch_size=32", "pytorch.batch_size=8"]
    for one in series:
        seqs = 32 if one.label.endswith("=32") else 8
        name = next(n for n, s in SERVER_CONFIGS.items() if s == seqs)
        assert [r.config_name for r in one.rows] == [
            server_config_name(name, rate) for rate in SERVER_RATES
        ]
        rates = [r.metrics["achieved_request_rate"].mean for r in one.rows]
        assert rates == sorted(rates)
    figure = figures.server_curves(" / ".join(key), series, energy=True)
    joules, latency, slo = figure.axes
    # each config's J/token curve goes through its rows' means, at their achieved rates
    drawn = [list(curve.lines[0].get_ydata()) for curve in joules.containers]
    expected = [[r.metrics["j_per_output_token"].mean for r in one.rows] for one in series]
    drawn_x = [list(curve.lines[0].get_xdata()) for curve in joules.containers]
    assert drawn == expected
    assert drawn_x == [
        [r.metrics["achieved_request_rate"].mean for r in one.rows] for one in series
    ]
    assert len(latency.containers) == 3 * 2  # TTFT, ITL, e2e p90 for each config
    assert slo.get_ylim() == (0.0, 105.0)
