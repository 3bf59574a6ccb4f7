"""The report in a real browser: headless Chromium loads it with no error and draws every image.

Chromium comes from Debian (scripts/install-test-tools.sh). The screenshot is kept under
$LEM_TEST_ARTIFACTS (default /tmp/lem-test-artifacts) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.browser import artifacts_dir, check_page, screenshot
from fixtures.results import write_engine_campaign, write_knob_sweep, write_server_campaign

from llenergymeasure.results.report import write_report


@pytest.mark.parametrize("energy", [True, False], ids=["gpu", "no-energy"])
def test_report_loads_without_errors_and_every_image_renders(tmp_path: Path, energy: bool) -> None:
    write_engine_campaign(tmp_path, cycles=5 if energy else 3, energy=energy)
    report = write_report(tmp_path, baseline="llama8b-bf16-pytorch", n_resamples=1_000)
    seen = check_page(report.html)
    assert seen.title.startswith("LLenergyMeasure report")
    assert seen.errors == [] and seen.console == []
    assert len(seen.images) == len(report.figures) == (5 if energy else 2)
    for image in seen.images:
        assert image["complete"] and image["naturalWidth"] > 0, image  # type: ignore[operator]
    shot = screenshot(report.html, artifacts_dir() / f"report-{'gpu' if energy else 'cpu'}.png")
    assert shot.read_bytes().startswith(b"\x89PNG")
    print(f"report screenshot: {shot}")


def test_the_knob_sweep_pareto_and_recommendation_panels_render(tmp_path: Path) -> None:
    # EXAMPLE results (tests/fixtures/results.py KNOB_SWEEP), labelled so in the report
    write_knob_sweep(tmp_path)
    report = write_report(tmp_path, n_resamples=1_000, slo={"itl_p90_ms": 15.0})
    seen = check_page(report.html)
    assert seen.errors == [] and seen.console == []
    pareto = [image for image in seen.images if image["alt"] == "GPU knob sweep: Pareto front"]
    assert len(pareto) == 1 and pareto[0]["naturalWidth"] > 0  # type: ignore[operator]
    page = report.html.read_text()
    assert "recommended: llama8b-vllm-sm1200 (sm_clock_mhz=1200)" in page
    assert "EXAMPLE: made-up numbers" in page
    shot = screenshot(report.html, artifacts_dir() / "report-knob-sweep.png")
    assert shot.read_bytes().startswith(b"\x89PNG")
    print(f"knob sweep report screenshot: {shot}")


def test_the_check_sees_a_broken_image_and_a_console_error(tmp_path: Path) -> None:
    # The harness itself can fail: a page with an undecodable image and an error.
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<img alt="bad" src="data:image/png;base64,AAAA">'
        "<script>console.error('boom')</script></body></html>"
    )
    seen = check_page(page)
    assert [image["naturalWidth"] for image in seen.images] == [0]
    assert "boom" in seen.errors
    assert any("failed to load" in error for error in seen.errors)
    assert seen.console


def test_the_server_mode_panels_and_cheapest_config_table_render(tmp_path: Path) -> None:
    # issue 19: synthetic server results (tests/fixtures/results.py), 2 configs x 4 rates
    write_server_campaign(tmp_path, cycles=3)
    report = write_report(tmp_path, baseline="qwen-seqs8-r1", n_resamples=1_000)
    seen = check_page(report.html)
    assert seen.errors == [] and seen.console == []
    server = [image for image in seen.images if str(image["alt"]).startswith("Server mode")]
    assert len(server) == 1, seen.images
    assert server[0]["complete"] and server[0]["naturalWidth"] > 1000  # type: ignore[operator]
    page = report.html.read_text()
    assert "<h2>Cheapest config meeting the SLO</h2>" in page
    assert "<td>qwen-seqs32-r4</td>" in page and "vs qwen-seqs8-r1" in page
    assert "<h2>Server mode</h2>" in page and "<th>SLO attainment (%)</th>" in page
    shot = screenshot(report.html, artifacts_dir() / "report-server.png", height=1400)
    assert shot.read_bytes().startswith(b"\x89PNG")
    print(f"server report screenshot: {shot}")
