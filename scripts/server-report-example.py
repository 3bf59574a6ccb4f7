#!/usr/bin/env python3
"""Remake docs/server-report-example.png: the report of a made-up server-mode sweep.

The results are the synthetic ones the tests use (tests/fixtures/results.py: 2 configs x
4 request rates x 3 cycles on an A100, EXAMPLE numbers); the report is `lem report`'s,
drawn by headless Chromium (tests/fixtures/browser.py, scripts/install-test-tools.sh).

    PYTHONPATH=src python scripts/server-report-example.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.browser import screenshot  # noqa: E402
from fixtures.results import write_server_campaign  # noqa: E402

from llenergymeasure.results.report import write_report  # noqa: E402

OUT = REPO / "docs" / "server-report-example.png"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lem-server-example-") as tmp:
        write_server_campaign(Path(tmp), cycles=3)
        report = write_report(tmp, baseline="qwen-seqs8-r1", n_resamples=1_000)
        screenshot(report.html, OUT, height=1000)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
