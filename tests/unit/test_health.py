"""`lem health` and `lem baseline`: the report, and both commands with and without NVML."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed
from typer.testing import CliRunner

from llenergymeasure.commands import health as health_commands
from llenergymeasure.measure import window
from llenergymeasure.measure.health import health_report


@pytest.fixture
def lem() -> typer.Typer:
    app = typer.Typer()
    health_commands.register(app)
    return app


@pytest.fixture(autouse=True)
def all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)


def test_report_without_nvml_says_so() -> None:
    with installed(FakeNvml([], driver_loaded=False)):
        report = health_report()
    assert report["nvml"] is False
    assert report["gpus"] == []
    assert "NVML did not initialise" in report["reason"]


def test_report_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(
        memory_used=72 << 30,
        utilization=97,
        temperature_c=71,
        processes=[(os.getpid(), 70 << 30), (os.getppid(), 1 << 30)],
    )
    # These PIDs have no NVIDIA device open, as every process NVML lists would (window.py)
    monkeypatch.setattr(window, "uses_nvidia_device", lambda proc_root, pid: True)
    with installed(FakeNvml([FakeGpu(), gpu])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
        report = health_report()
    assert report["nvml"] is True
    assert report["driver_version"] == "550.54.15" and report["cuda_version"] == "12.4"
    (only,) = report["gpus"]
    assert only["index"] == 1
    assert (only["memory_used_mib"], only["memory_total_mib"]) == (73728.0, 81920.0)
    assert only["memory_used_pct"] == 90.0
    assert (only["utilization_pct"], only["temperature_c"]) == (97.0, 71.0)
    assert [(p["pid"], p["owner"]) for p in only["processes"]] == [
        (os.getpid(), "self"),
        (os.getppid(), "foreign"),
    ]


def test_health_json_without_nvml_exits_zero(lem: typer.Typer) -> None:
    with installed(FakeNvml([], driver_loaded=False)):
        result = CliRunner().invoke(lem, ["health", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["nvml"] is False


def test_health_table_lists_each_gpu(lem: typer.Typer) -> None:
    with installed(FakeNvml(gpus(2, name="NVIDIA A100"))):
        result = CliRunner().invoke(lem, ["health"])
    assert result.exit_code == 0, result.output
    assert result.output.count("NVIDIA A100") == 2


@pytest.mark.usefixtures("instant_settle")
def test_baseline_command_writes_the_file(lem: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    with installed(FakeNvml(gpus(2, power_w=55.0))):
        result = CliRunner().invoke(lem, ["baseline", "--seconds", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    stored = json.loads(out.read_text())
    assert [gpu["power_w"] for gpu in stored["gpus"]] == [55.0, 55.0]
    assert json.loads(result.output)["gpus"] == stored["gpus"]


@pytest.mark.usefixtures("instant_settle")
def test_baseline_force_measures_again(lem: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    fake = FakeNvml(gpus(1, power_w=55.0))
    with installed(fake):
        CliRunner().invoke(lem, ["baseline", "--seconds", "0.5", "--out", str(out)])
        fake.gpus[0].power_w = 30.0
        kept = CliRunner().invoke(lem, ["baseline", "--seconds", "0.5", "--out", str(out)])
        forced = CliRunner().invoke(
            lem, ["baseline", "--seconds", "0.5", "--out", str(out), "--force"]
        )
    assert json.loads(kept.output)["gpus"][0]["power_w"] == 55.0
    assert json.loads(forced.output)["gpus"][0]["power_w"] == 30.0


def test_baseline_settles_at_most_the_given_seconds_and_says_so(
    lem: typer.Typer, tmp_path: Path
) -> None:
    out = tmp_path / "baseline.json"
    argv = ["baseline", "--seconds", "0.5", "--out", str(out), "--settle-max-seconds", "0"]
    with installed(FakeNvml(gpus(1, power_w=55.0))):
        result = CliRunner().invoke(lem, argv)
    assert result.exit_code == 0, result.output
    (gpu,) = json.loads(out.read_text())["gpus"]
    # no earlier figure: steady takes a 30 s window, so a 0 s cap measures unsettled
    assert (gpu["settled"], gpu["settled_by"]) == (False, "steady")


def test_baseline_without_nvml_writes_nothing_and_exits_zero(
    lem: typer.Typer, tmp_path: Path
) -> None:
    out = tmp_path / "baseline.json"
    with installed(FakeNvml([], driver_loaded=False)):
        result = CliRunner().invoke(lem, ["baseline", "--seconds", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "no idle baseline" in result.output
    assert not out.exists()


@pytest.mark.usefixtures("instant_settle")
def test_baseline_without_power_readings_fails_naming_the_file(
    lem: typer.Typer, tmp_path: Path
) -> None:
    out = tmp_path / "baseline.json"
    with installed(FakeNvml([FakeGpu(power_supported=False)])):
        result = CliRunner().invoke(lem, ["baseline", "--seconds", "0.5", "--out", str(out)])
    assert result.exit_code == 1
    assert str(out) in result.output
