"""report.html: the figures are written and inlined, empty panels are words, facts are true."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from fixtures.results import A100, H100, make_result, write_engine_campaign, write_result
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.host.manifest import ManifestEntry, replace_entry
from llenergymeasure.results.aggregate import aggregate_directory, format_value
from llenergymeasure.results.figures import MAX_ROWS, pareto_front, shown_rows
from llenergymeasure.results.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GPU_FIGURES = ["energy_per_token", "energy_vs_latency", "throughput", "power_traces", "cycles"]
BASELINE = "llama8b-bf16-pytorch"


@pytest.fixture(scope="module")
def gpu_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpu")
    write_engine_campaign(root)
    write_report(root, baseline=BASELINE, n_resamples=1_000)
    return root


def test_every_figure_is_a_png_file_and_the_same_bytes_inline(gpu_report: Path) -> None:
    page = (gpu_report / "report.html").read_text()
    inline = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    files = [(gpu_report / "figures" / f"{name}.png").read_bytes() for name in GPU_FIGURES]
    assert all(data.startswith(PNG_MAGIC) for data in files)
    assert inline == files  # page order = figure order, byte for byte


def test_the_page_needs_no_network_and_runs_no_script(gpu_report: Path) -> None:
    page = (gpu_report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page


def test_summary_and_comparison_tables_hold_the_aggregated_numbers(gpu_report: Path) -> None:
    page = (gpu_report / "report.html").read_text()
    summary = aggregate_directory(gpu_report, baseline=BASELINE, n_resamples=1_000)
    row = next(
        r for r in summary.rows if r.config_name == "llama8b-fp8-trtllm" and H100 in r.hardware
    )
    assert format_value(row.metrics["j_per_output_token"].mean) in page
    assert format_value(row.metrics["wh_per_1k_requests"].mean) in page
    assert f"Paired ratios to baseline {BASELINE}" in page
    ratio = next(
        c
        for c in summary.comparisons
        if c.config_name == row.config_name and c.metric == "energy_j"
    )
    assert ratio.excludes_one is True and ratio.ratio.mean < 1  # type: ignore[operator]
    assert format_value(ratio.ratio.mean) in page
    assert "studentized bootstrap from 5" in page


def test_facts_name_hosts_gpus_drivers_versions_and_energy_sources(gpu_report: Path) -> None:
    facts = (gpu_report / "report.html").read_text().split("Campaign facts", 1)[1]
    for fact in ("gpu-a100, gpu-h100", A100, H100, "550.54.15", "torch 2.4.1", "nvml"):
        assert fact in facts, fact
    assert "engines-a100, engines-h100" in facts


def test_no_energy_source_gives_sentences_not_empty_axes(tmp_path: Path) -> None:
    write_engine_campaign(tmp_path, cycles=3, energy=False)
    report = write_report(tmp_path, n_resamples=500)
    assert sorted(p.stem for p in report.figures) == ["cycles", "throughput"]
    page = report.html.read_text()
    assert page.count("No energy was measured (energy source: none)") == 2
    assert "No power samples in these results" in page
    assert page.count("<img ") == 2


def test_failures_from_the_manifests_are_listed(tmp_path: Path) -> None:
    write_engine_campaign(tmp_path, cycles=3, energy=False)
    entry = ManifestEntry(
        exp_id="engines-a100__llama8b-bf16-vllm__c04",
        config_name="llama8b-bf16-vllm",
        config_hash="0" * 16,
        backend="vllm",
        service="vllm",
        cycle=4,
        status="failed",
        attempts=2,
        error="CUDA out of memory",
    )
    manifest = tmp_path / "hosts" / "gpu-a" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    replace_entry(manifest, "engines-a100", "gpu-a", None, entry)
    page = write_report(tmp_path, n_resamples=500).html.read_text()
    failures = page.split("<h3>Failures</h3>", 1)[1]
    assert (
        "engines-a100__llama8b-bf16-vllm__c04 on gpu-a (attempts 2): CUDA out of memory" in failures
    )


def test_pareto_front_keeps_only_points_nothing_beats() -> None:
    points = [(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0), (2.0, 2.5)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # ties both stay


def test_lem_report_writes_into_out(tmp_path: Path) -> None:
    write_engine_campaign(tmp_path / "results", cycles=3)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["report", str(tmp_path / "results"), "--out", str(out), "--resamples", "500"]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'report.html'}" in result.stdout
    assert sorted(p.stem for p in (out / "figures").iterdir()) == sorted(GPU_FIGURES)
    empty = CliRunner().invoke(app, ["report", str(tmp_path / "out" / "figures")])
    assert empty.exit_code == 2 and "no readable result.json found" in empty.stderr


def test_a_large_campaign_draws_the_best_configs_and_says_so(tmp_path: Path) -> None:
    # 30 configs: figures draw the 24 with the lowest J per output token, the tables all 30
    for k in range(30):
        for cycle in (1, 2, 3):
            result = make_result(f"cfg{k:02d}", cycle, energy_j=100.0 + k, with_power_trace=True)
            write_result(tmp_path, result)
    report = write_report(tmp_path, n_resamples=200)
    page = report.html.read_text()
    assert f"The figures show the {MAX_ROWS} of 30 configs x hardware with the lowest" in page
    summary = page.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    assert all(f"<td>cfg{k:02d}</td>" in summary for k in range(30))
    shown = shown_rows(aggregate_directory(tmp_path, n_resamples=200))
    assert [row.config_name for row in shown] == [f"cfg{k:02d}" for k in range(MAX_ROWS)]
