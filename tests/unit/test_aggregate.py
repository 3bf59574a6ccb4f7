"""Aggregation: every number traces to result files; nulls stay null; hardware never pooled."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fixtures.results import A100, H100, LAPTOP_CPU, make_result, write_result

from llenergymeasure.contracts.result import HEADLINE_METRICS
from llenergymeasure.errors import LemError
from llenergymeasure.results.aggregate import (
    COMPARISON_FILE,
    CSV_COLUMNS,
    METRIC_LABELS,
    Summary,
    SummaryRow,
    aggregate_directory,
    aggregate_results,
    format_interval,
    format_value,
    incomplete_notes,
    load_result_files,
    render_table,
    write_summary,
)
from llenergymeasure.stats import bootstrap_ci

ENERGIES_J = (400.0, 410.0, 395.0)  # cycles 1-3 of tiny-bs1 on the A100
OUTPUT_TOKENS = 640
BASELINE_W, WINDOW_S = 20.0, 8.0


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    for cycle, energy in enumerate(ENERGIES_J, start=1):
        write_result(tmp_path, make_result("tiny-bs1", cycle, energy_j=energy))
    return tmp_path


def only_row(summary: Summary, config_name: str, hardware_part: str = "") -> SummaryRow:
    rows = [r for r in summary.rows if r.config_name == config_name and hardware_part in r.hardware]
    assert len(rows) == 1, rows
    return rows[0]


def table_line(table: str, label: str) -> list[str]:
    """The cells of the one table line whose metric column is `label`."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]
    matching = [cells for cells in rows if label in cells]
    assert len(matching) == 1, (label, table)
    return matching[0]


def test_means_are_computed_from_the_result_files(results_dir: Path) -> None:
    row = only_row(aggregate_directory(results_dir), "tiny-bs1")
    n = len(ENERGIES_J)
    by_hand = {
        "energy_j": sum(ENERGIES_J) / n,
        "idle_adjusted_energy_j": sum(e - BASELINE_W * WINDOW_S for e in ENERGIES_J) / n,
        "j_per_output_token": sum(e / OUTPUT_TOKENS for e in ENERGIES_J) / n,
        "output_tokens_per_s": OUTPUT_TOKENS / WINDOW_S,
    }
    for metric, expected in by_hand.items():
        assert row.metrics[metric].mean == pytest.approx(expected, rel=1e-12), metric
        assert row.metrics[metric].n == n
    assert (row.n, row.cycles, row.hardware) == (3, [1, 2, 3], f"1x {A100}")
    assert row.exp_ids == [f"demo__tiny-bs1__c0{c}" for c in (1, 2, 3)]
    # relative to the results folder, which may move to another machine
    assert row.sources == [f"{e}/result.json" for e in row.exp_ids]
    assert row.warnings == ["3 cycles: fewer than 5, wide Student-t intervals"]


def test_interval_is_the_ci_of_the_cycle_values(results_dir: Path) -> None:
    energy = only_row(aggregate_directory(results_dir), "tiny-bs1").metrics["energy_j"]
    assert energy == bootstrap_ci(ENERGIES_J)
    # 3 cycles: Student-t, mean +- t(0.975, 2) * sd / sqrt(3), wider than [min, max]
    half = 4.302652729911275 * energy.std / len(ENERGIES_J) ** 0.5  # type: ignore[operator]
    assert energy.method == "student-t"
    assert (energy.ci_lower, energy.ci_upper) == pytest.approx(
        (energy.mean - half, energy.mean + half)  # type: ignore[operator]
    )
    assert energy.ci_lower < min(ENERGIES_J) and energy.ci_upper > max(ENERGIES_J)  # type: ignore[operator]


def test_percentile_method_by_name_stays_within_the_sample(results_dir: Path) -> None:
    summary = aggregate_directory(results_dir, method="percentile")
    energy = only_row(summary, "tiny-bs1").metrics["energy_j"]
    assert energy.method == "percentile" and summary.method == "percentile"
    assert min(ENERGIES_J) <= energy.ci_lower <= energy.ci_upper <= max(ENERGIES_J)  # type: ignore[operator]
    assert "percentile bootstrap" in render_table(summary)


def test_printed_numbers_match_the_result_files(results_dir: Path) -> None:
    summary = aggregate_directory(results_dir)
    energy = only_row(summary, "tiny-bs1").metrics["energy_j"]
    cells = table_line(render_table(summary), METRIC_LABELS["energy_j"])
    mean_by_hand = sum(ENERGIES_J) / len(ENERGIES_J)
    assert format_value(mean_by_hand) == "401.7"
    assert cells[-4:] == [
        str(len(ENERGIES_J)),
        format_value(mean_by_hand),
        format_interval(energy),
        format_value(energy.std),
    ]
    assert "\x1b[" not in render_table(summary)  # plain text for Ansible output


def test_metric_null_in_every_cycle_is_na_never_zero(tmp_path: Path) -> None:
    for cycle in (1, 2, 3):
        result = make_result("cpu-only", cycle, energy_j=None, gpu_name=None, ttft_mean_s=None)
        write_result(tmp_path, result)
    summary = aggregate_directory(tmp_path)
    row = only_row(summary, "cpu-only")
    for metric in ("energy_j", "idle_adjusted_energy_j", "j_per_output_token", "ttft_mean_s"):
        ci = row.metrics[metric]
        assert (ci.mean, ci.ci_lower, ci.n, ci.n_dropped) == (None, None, 0, 3), metric
    cells = table_line(render_table(summary), METRIC_LABELS["energy_j"])
    assert cells[-4:] == ["0", "n/a", "n/a", "n/a"]
    assert row.metrics["output_tokens_per_s"].mean == pytest.approx(OUTPUT_TOKENS / WINDOW_S)


def test_null_in_some_cycles_is_left_out_and_counted(tmp_path: Path) -> None:
    for cycle, ttft in ((1, 0.05), (2, None), (3, 0.07)):
        write_result(tmp_path, make_result("tiny", cycle, ttft_mean_s=ttft))
    ttft_ci = only_row(aggregate_directory(tmp_path), "tiny").metrics["ttft_mean_s"]
    assert (ttft_ci.n, ttft_ci.n_dropped) == (2, 1)
    assert ttft_ci.mean == pytest.approx(0.06)


def test_hardware_is_never_pooled(tmp_path: Path) -> None:
    for cycle in (1, 2, 3):
        for campaign, energy, gpu in (
            ("a100", 400.0, A100),
            ("h100", 250.0, H100),
            ("cpu", 90.0, None),
        ):
            result = make_result(
                "tiny", cycle, campaign_name=campaign, energy_j=energy, gpu_name=gpu
            )
            write_result(tmp_path / campaign, result)
    summary = aggregate_directory(tmp_path)
    means = {row.hardware: row.metrics["energy_j"].mean for row in summary.rows}
    assert means == {f"1x {A100}": 400.0, f"1x {H100}": 250.0, LAPTOP_CPU: 90.0}
    assert all(row.n == 3 for row in summary.rows)


def test_duplicate_exp_id_counts_once_newest_wins(results_dir: Path) -> None:
    copy = make_result("tiny-bs1", 2, energy_j=999.0, finished_at=datetime(2025, 2, 1, tzinfo=UTC))
    write_result(results_dir / "copied", copy)
    summary = aggregate_directory(results_dir)
    row = only_row(summary, "tiny-bs1")
    assert row.n == 3
    assert row.metrics["energy_j"].mean == pytest.approx((400.0 + 999.0 + 395.0) / 3)
    assert row.sources[1] == f"copied/{copy.identity.exp_id}/result.json"
    [warning] = summary.warnings
    assert warning.startswith("exp_id demo__tiny-bs1__c02 appears 2 times")
    assert "2025-02-01T00:00:00+00:00" in warning


def test_interrupted_attempts_are_not_aggregated(results_dir: Path) -> None:
    moved = results_dir / "demo__tiny-bs1__c01.interrupted-1"
    write_result(moved, make_result("tiny-bs1", 1, energy_j=5000.0))
    row = only_row(aggregate_directory(results_dir), "tiny-bs1")
    assert row.metrics["energy_j"].mean == pytest.approx(sum(ENERGIES_J) / 3)


def test_unreadable_files_are_reported_not_fatal(results_dir: Path) -> None:
    (results_dir / "torn").mkdir()
    (results_dir / "torn" / "result.json").write_text('{"identity": ')
    newer = json.loads(make_result("tiny-bs1", 9).model_dump_json())
    newer["schema_version"] = "2.0"
    (results_dir / "future").mkdir()
    (results_dir / "future" / "result.json").write_text(json.dumps(newer))

    loaded = load_result_files(results_dir)
    results, errors = loaded.results, loaded.errors
    assert len(results) == 3
    assert sorted(errors) == [
        f"{results_dir / 'future' / 'result.json'}: schema_version: '2.0' is not readable "
        "by this version (reads 1.x)",
        f"{results_dir / 'torn' / 'result.json'}: not a valid result: (top level): "
        "Invalid JSON: EOF while parsing a value at line 1 column 13",
    ]
    summary = aggregate_directory(results_dir)
    assert summary.load_errors == errors
    assert "not loaded: " in render_table(summary)


def test_changed_config_is_kept_apart(results_dir: Path) -> None:
    write_result(results_dir / "rerun", make_result("tiny-bs1", 4, config_hash="ffff000011112222"))
    summary = aggregate_directory(results_dir)
    assert sorted(row.n for row in summary.rows if row.config_name == "tiny-bs1") == [1, 3]
    assert any("2 different config hashes" in w for w in summary.warnings)


def test_few_cycles_and_throttling_are_flagged() -> None:
    results = [make_result("tiny", 1, throttled=True), make_result("tiny", 2)]
    [row] = aggregate_results(results).rows
    assert row.warnings == [
        "2 cycles: fewer than 5, wide Student-t intervals",
        "1 of 2 result(s) measured while throttled",
    ]
    assert "tiny on 1x" in render_table(aggregate_results(results))


def test_sources_must_match_results() -> None:
    with pytest.raises(ValueError, match="1 sources given for 2 results"):
        aggregate_results([make_result(cycle=1), make_result(cycle=2)], sources=["a"])


def test_written_files_hold_the_same_numbers(results_dir: Path, tmp_path: Path) -> None:
    summary = aggregate_directory(results_dir)
    out = tmp_path / "summary-out"
    paths = write_summary(summary, out)
    assert [p.name for p in paths] == ["summary.json", "summary.csv", "summary.md"]

    assert Summary.model_validate_json(paths[0].read_text()) == summary
    rows = list(csv.DictReader(io.StringIO(paths[1].read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(HEADLINE_METRICS)
    energy = next(r for r in rows if r["metric"] == "energy_j")
    assert float(energy["mean"]) == pytest.approx(sum(ENERGIES_J) / 3, rel=1e-15)
    assert energy["exp_ids"] == "demo__tiny-bs1__c01;demo__tiny-bs1__c02;demo__tiny-bs1__c03"
    markdown = paths[2].read_text()
    assert f"| tiny-bs1 | 1x {A100} | 3 | energy (J) | 3 | 401.7 |" in markdown


def test_write_failure_names_the_path(results_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(LemError, match=f"{blocker}: cannot write summary"):
        write_summary(aggregate_directory(results_dir), blocker)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LemError, match=f"{tmp_path / 'nope'}: not a directory"):
        load_result_files(tmp_path / "nope")


def test_wh_per_1000_requests_sits_beside_j_per_token(results_dir: Path) -> None:
    summary = aggregate_directory(results_dir)
    wh = only_row(summary, "tiny-bs1").metrics["wh_per_1k_requests"]
    # make_result: 20 requests; J per request / 3.6 = Wh per 1,000 requests
    assert wh.mean == pytest.approx(sum(e / 20 / 3.6 for e in ENERGIES_J) / len(ENERGIES_J))
    metrics = summary.metrics
    assert metrics.index("wh_per_1k_requests") == metrics.index("j_per_output_token") + 2
    assert "Wh / 1,000 requests" in render_table(summary)


def test_paired_ratios_to_a_baseline_are_in_every_summary_file(tmp_path: Path) -> None:
    base = {1: 400.0, 2: 440.0, 3: 420.0, 4: 410.0}
    other = {1: 300.0, 2: 333.0, 3: 318.0}  # cycle 4 not run: only cycles 1-3 are paired
    for cycle, energy in base.items():
        write_result(tmp_path, make_result("base", cycle, energy_j=energy))
    for cycle, energy in other.items():
        write_result(tmp_path, make_result("fast", cycle, energy_j=energy, config_hash="f" * 16))
    summary = aggregate_directory(tmp_path, baseline="base")
    [ratio] = [c for c in summary.comparisons if c.metric == "energy_j"]
    assert (ratio.config_name, ratio.baseline, ratio.cycles) == ("fast", "base", [1, 2, 3])
    assert ratio.ratio.mean == pytest.approx(sum(other.values()) / (400.0 + 440.0 + 420.0))
    assert ratio.ratio.method == "student-t" and ratio.excludes_one is True
    paths = write_summary(summary, tmp_path / "out")
    assert [p.name for p in paths] == ["summary.json", "summary.csv", "summary.md", COMPARISON_FILE]
    assert Summary.model_validate_json(paths[0].read_text()) == summary
    lines = list(csv.DictReader(io.StringIO(paths[3].read_text())))
    energy_line = next(line for line in lines if line["metric"] == "energy_j")
    assert float(energy_line["ratio"]) == ratio.ratio.mean
    assert (energy_line["excludes_one"], energy_line["cycles"]) == ("true", "1;2;3")
    assert "## Paired ratios to baseline base" in paths[2].read_text()


def test_an_absent_baseline_is_a_warning(results_dir: Path) -> None:
    summary = aggregate_directory(results_dir, baseline="nope")
    assert summary.comparisons == []
    assert "baseline 'nope': no results, nothing compared" in summary.warnings


def test_the_tree_names_the_planned_experiments_without_an_outcome(tmp_path: Path) -> None:
    """From plan.json and each host's fetched manifest: what `lem aggregate` and the
    campaign callback both put in the summary's warnings."""
    plan = {
        "experiments": [
            {"exp_id": "demo__a__c01", "host": "h1"},
            {"exp_id": "demo__a__c02", "host": "h1"},
            {"exp_id": "demo__a__c03", "host": "h1"},
            {"exp_id": "demo__b__c01", "host": "h2"},
        ]
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    entries = {"demo__a__c01": {"status": "completed"}, "demo__a__c02": {"status": "failed"}}
    (tmp_path / "hosts" / "h1").mkdir(parents=True)
    (tmp_path / "hosts" / "h1" / "manifest.json").write_text(json.dumps({"entries": entries}))

    assert incomplete_notes(tmp_path, unreachable={"h2"}) == [
        "h1: 1 experiment(s) with no outcome on the controller yet (demo__a__c03); "
        "run the playbook again to finish them",
        "h2 unreachable: 1 experiment(s) with no outcome on the controller yet (demo__b__c01); "
        "run the playbook again to finish them",
    ]
    write_result(tmp_path / "hosts" / "h2", make_result("b", 1, campaign_name="demo"))
    assert len(incomplete_notes(tmp_path)) == 1  # h2 has no manifest: its result file counts
    assert incomplete_notes(tmp_path / "hosts") == []  # no plan: nothing to say
