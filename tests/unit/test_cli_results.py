"""`lem aggregate` and `lem status` through the real CLI app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.results import make_result, write_result
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.host.manifest import ManifestEntry, replace_entry

runner = CliRunner()


def test_aggregate_prints_the_table_and_writes_summaries_next_to_results(tmp_path: Path) -> None:
    for cycle, energy in ((1, 400.0), (2, 410.0), (3, 395.0)):
        write_result(tmp_path, make_result("tiny-bs1", cycle, energy_j=energy))
    result = runner.invoke(app, ["aggregate", str(tmp_path), "--resamples", "1000"])
    assert result.exit_code == 0, result.output
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]
    [energy_row] = [cells for cells in rows if "energy (J)" in cells]
    # config, hardware, cycles, CI method, metric, n, mean (400+410+395)/3, CI, std
    assert energy_row[0] == "tiny-bs1" and energy_row[3] == "student-t"
    assert energy_row[6] == "401.7"
    assert "Student-t below 5 cycles, studentized bootstrap from 5" in result.stdout
    for name in ("summary.json", "summary.csv", "summary.md"):
        assert f"wrote {tmp_path / name}" in result.stdout
        assert (tmp_path / name).is_file()


def test_aggregate_out_and_options_reach_the_summary(tmp_path: Path) -> None:
    write_result(tmp_path / "results", make_result("tiny", 1))
    out = tmp_path / "summaries"
    args = ["aggregate", str(tmp_path / "results"), "--out", str(out), "--confidence", "0.9"]
    result = runner.invoke(app, [*args, "--resamples", "500", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "90% CI" in result.stdout
    assert "1 cycle: no confidence interval" in result.stdout
    summary = (out / "summary.json").read_text()
    assert '"confidence": 0.9' in summary and '"n_resamples": 500' in summary
    assert not (tmp_path / "results" / "summary.json").exists()


def test_aggregate_reports_a_bad_file_and_goes_on(tmp_path: Path) -> None:
    write_result(tmp_path, make_result("tiny", 1))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "result.json").write_text("{")
    result = runner.invoke(app, ["aggregate", str(tmp_path), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert f"not loaded: {tmp_path / 'torn' / 'result.json'}" in result.stdout


@pytest.mark.parametrize("make_dir", [True, False])
def test_aggregate_without_results_fails_naming_the_directory(
    tmp_path: Path, make_dir: bool
) -> None:
    target = tmp_path / "empty"
    if make_dir:
        target.mkdir()
    result = runner.invoke(app, ["aggregate", str(target)])
    assert result.exit_code != 0
    assert str(target) in result.stderr
    assert not (target / "summary.json").exists()


def manifest_entry(cycle: int, status: str, error: str | None = None) -> ManifestEntry:
    return ManifestEntry(
        exp_id=f"demo__tiny__c{cycle:02d}",
        config_name="tiny",
        config_hash="aaaa000011112222",
        backend="pytorch",
        service="pytorch",
        cycle=cycle,
        status=status,  # type: ignore[arg-type]
        attempts=1,
        error=error,
    )


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    host_a = tmp_path / "host-a" / "demo" / "manifest.json"
    host_b = tmp_path / "host-b" / "demo" / "manifest.json"
    for path in (host_a, host_b):
        path.parent.mkdir(parents=True)
    replace_entry(host_a, "demo", "host-a", None, manifest_entry(1, "completed"))
    replace_entry(host_a, "demo", "host-a", None, manifest_entry(2, "failed", "CUDA out of memory"))
    replace_entry(host_b, "demo", "host-b", None, manifest_entry(3, "running"))
    replace_entry(host_b, "demo", "host-b", None, manifest_entry(4, "pending"))
    return tmp_path


def count_row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell`."""
    rows = [[cell.strip() for cell in line.strip("│ ").split("│")] for line in output.splitlines()]
    [row] = [cells for cells in rows if cells[0] == first_cell]
    return row


def test_status_of_a_directory_counts_every_manifest_and_the_total(state_root: Path) -> None:
    result = runner.invoke(app, ["status", str(state_root)])
    assert result.exit_code == 0, result.output
    # columns: manifest, campaign, host, pending, running, completed, failed, total
    host_a = str(state_root / "host-a" / "demo" / "manifest.json")
    assert count_row(result.stdout, host_a)[1:] == ["demo", "host-a", "0", "0", "1", "1", "2"]
    assert count_row(result.stdout, "total")[3:] == ["1", "1", "1", "1", "4"]
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed:")]
    assert failed == ["failed: demo__tiny__c02 on host-a (attempts 1): CUDA out of memory"]


def test_status_of_one_manifest_file(state_root: Path) -> None:
    path = state_root / "host-b" / "demo" / "manifest.json"
    result = runner.invoke(app, ["status", str(path)])
    assert result.exit_code == 0, result.output
    assert count_row(result.stdout, "total")[3:] == ["1", "1", "0", "0", "2"]
    assert "failed:" not in result.stdout


def test_status_names_a_corrupt_manifest_and_leaves_it(state_root: Path) -> None:
    corrupt = state_root / "host-b" / "demo" / "manifest.json"
    corrupt.write_text('{"manifest_version": 1, "entries": {')
    result = runner.invoke(app, ["status", str(state_root)])
    assert result.exit_code == 2
    assert f"error: {corrupt}: not a valid manifest" in result.stderr
    assert count_row(result.stdout, "total")[3:] == ["0", "0", "1", "1", "2"]
    assert corrupt.read_text() == '{"manifest_version": 1, "entries": {'


def test_status_without_manifests_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path}: no manifest.json found" in result.stderr
    missing = runner.invoke(app, ["status", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nope'}: no such file or directory" in missing.stderr


def test_compare_prints_paired_ratios_and_fails_without_a_baseline(tmp_path: Path) -> None:
    for cycle, (base, fast) in enumerate(((400.0, 300.0), (440.0, 330.0), (420.0, 318.0)), 1):
        write_result(tmp_path, make_result("base", cycle, energy_j=base))
        write_result(tmp_path, make_result("fast", cycle, energy_j=fast, config_hash="f" * 16))
    result = runner.invoke(app, ["compare", str(tmp_path), "--baseline", "base"])
    assert result.exit_code == 0, result.output
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]
    [energy] = [cells for cells in rows if "energy (J)" in cells]
    # config, hardware, metric, pairs, ratio (300+330+318)/(400+440+420), CI, excludes 1,
    # detectable difference
    assert energy[0] == "fast" and energy[3:5] == ["3", "0.7524"] and energy[6] == "yes"
    assert energy[7].endswith("%")
    assert not (tmp_path / "summary.json").exists()  # compare prints, writes nothing
    missing = runner.invoke(app, ["compare", str(tmp_path), "--baseline", "nope"])
    assert missing.exit_code == 1
    assert "baseline 'nope': no results" in missing.stdout
    bad = runner.invoke(app, ["compare", str(tmp_path), "--baseline", "base", "--method", "x"])
    assert bad.exit_code == 2 and "--method: 'x' is not one of" in bad.stderr


def test_status_shows_which_campaign_holds_each_host(state_root: Path) -> None:
    held = {"campaign": "other", "controller": "ctl", "pid": 42, "start_ticks": 7}
    (state_root / "host-a" / "host.lock").write_text(
        json.dumps({**held, "acquired_at": "2026-01-01T00:00:00+00:00"})
    )
    (state_root / "host-b" / "host.lock").write_text("")

    on_root = runner.invoke(app, ["status", str(state_root)])
    on_manifest = runner.invoke(app, ["status", str(state_root / "host-a" / "demo")])

    assert on_root.exit_code == 0, on_root.output
    lines = [line for line in on_root.stdout.splitlines() if line.startswith("host lock")]
    assert lines == [
        f"host lock {state_root / 'host-a' / 'host.lock'}: campaign 'other' (controller ctl, "
        "ansible-playbook pid 42, since 2026-01-01T00:00:00+00:00)",
        f"host lock {state_root / 'host-b' / 'host.lock'}: free",
    ]
    assert lines[0] in on_manifest.stdout
