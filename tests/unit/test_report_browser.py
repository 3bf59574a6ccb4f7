"""The report in a real browser: headless Chromium loads it with no error and draws every image.

Chromium comes from Debian (scripts/install-test-tools.sh). The screenshot is kept under
$LEM_TEST_ARTIFACTS (default /tmp/lem-test-artifacts) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.browser import artifacts_dir, check_page, screenshot
from fixtures.results import write_engine_campaign

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
