"""The checks of scripts/gpu-check.sh (llenergymeasure.gpucheck), fed result.json contents,
and the script itself on a machine without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.fake_nvml import FakeNvml, gpus, installed
from fixtures.compose import COMPOSE_TEMPLATE, REPO
from fixtures.results import make_result

from llenergymeasure import gpucheck
from llenergymeasure.config.loader import parse_experiment

SCRIPT = REPO / "scripts" / "gpu-check.sh"
PROBE_ONE_GPU = {"gpus": [{"index": 0, "name": "NVIDIA A100", "power_limit_w": 400.0}]}


def gpu_result(**overrides: Any) -> dict[str, Any]:
    """A consistent GPU result: counter energy = the power trace's energy, ITL measured."""
    arguments = {"with_power_trace": True, "itl_mean_s": 0.01, "window_s": 20.0, **overrides}
    return make_result(**arguments).model_dump(mode="json")


def statuses(run: gpucheck.Run) -> dict[str, str]:
    return {check.name: check.status for check in run.checks}


def test_a_consistent_gpu_result_passes_every_check() -> None:
    run = gpucheck.check_result(gpu_result())

    assert statuses(run) == {
        "ran_on_cuda": "pass",
        "energy_counter_vs_power": "pass",
        "idle_baseline": "pass",
        "ttft_itl_counts": "pass",
    }
    assert run.status == "pass" and run.summary["gpu_energy_j"] == 400.0


def test_integrated_power_holds_the_edge_samples_to_the_window() -> None:
    # 100 W from 1 s to 9 s of a 10 s window: 1 s held at each end.
    assert gpucheck.integrate_power([1.0, 5.0, 9.0], [100.0, 100.0, 100.0], 10.0) == 1000.0
    # a ramp integrates as trapezoids
    assert gpucheck.integrate_power([0.0, 2.0], [0.0, 100.0], 2.0) == 100.0


@pytest.mark.parametrize(
    ("deviation", "above", "status"),
    [(0.14, True, "pass"), (0.14, False, "pass"), (0.16, True, "fail"), (0.16, False, "fail")],
)
def test_energy_counter_must_agree_with_power_within_15_percent(
    deviation: float, above: bool, status: str
) -> None:
    """Deviation = |counter - integrated| / counter, the counter above or below the samples."""
    result = gpu_result()
    power, window = result["power"], result["timing"]["window_seconds"]
    integrated = gpucheck.integrate_power(power["samples_t"], power["samples_w"], window)
    result["energy"]["gpu_energy_j"] = integrated / (1 - deviation if above else 1 + deviation)

    check = gpucheck.check_energy_counter(result)

    assert check.status == status, check.detail
    assert check.values["deviation"] == pytest.approx(deviation, abs=1e-4)


def test_energy_check_fails_without_power_samples_or_gpu_energy() -> None:
    no_trace = gpucheck.check_energy_counter(gpu_result(with_power_trace=False))
    cpu_only = gpucheck.check_energy_counter(make_result(gpu_name=None).model_dump(mode="json"))

    assert no_trace.status == "fail" and "cannot compare" in no_trace.detail
    assert cpu_only.status == "fail" and "'rapl'" in cpu_only.detail


def test_energy_from_power_integration_has_no_counter_to_compare() -> None:
    result = gpu_result()
    result["energy"]["source"] = "nvml_power"

    assert gpucheck.check_energy_counter(result).status == "skip"


@pytest.mark.parametrize(("idle_w", "status"), [(20.0, "pass"), (9.0, "fail"), (450.0, "fail")])
def test_idle_baseline_must_lie_between_10_w_and_the_power_limit(
    idle_w: float, status: str
) -> None:
    check = gpucheck.check_idle_baseline(gpu_result(baseline_w=idle_w))  # limit 400 W

    assert check.status == status, check.detail


def test_idle_baseline_missing_fails() -> None:
    result = gpu_result()
    result["energy"]["idle_baseline_power_w"] = None
    result["energy"]["idle_baseline_power_w_per_gpu"] = None

    assert gpucheck.check_idle_baseline(result).status == "fail"


def test_empty_itl_fails_the_latency_check() -> None:
    check = gpucheck.check_latency_counts(gpu_result(itl_mean_s=None))

    assert check.status == "fail" and check.values == {"ttft_n": 20, "itl_n": 0}


def test_cpu_result_fails_the_cuda_check() -> None:
    run = gpucheck.check_result(make_result(gpu_name=None).model_dump(mode="json"))

    assert statuses(run)["ran_on_cuda"] == "fail" and run.status == "fail"


def test_report_passes_only_when_every_run_ran_and_passed() -> None:
    both = {
        "pytorch": gpucheck.check_result(gpu_result()),
        "image": gpucheck.check_result(gpu_result()),
    }

    report = gpucheck.assemble(PROBE_ONE_GPU, both)

    assert (report["status"], gpucheck.exit_code(report)) == ("pass", 0)
    assert report["skipped"] == []


def test_a_skipped_run_makes_the_report_partial_and_names_it() -> None:
    passed = gpucheck.check_result(gpu_result())
    runs = {"pytorch": passed, "vllm": gpucheck.Run("skip", "no vllm")}

    report = gpucheck.assemble(PROBE_ONE_GPU, runs)

    assert (report["status"], gpucheck.exit_code(report)) == ("partial", 2)
    assert report["skipped"] == ["vllm: no vllm"]
    assert report["runs"]["vllm"] == {
        "status": "skip",
        "reason": "no vllm",
        "result": None,
        "checks": [],
        "summary": {},
    }


def test_a_skipped_check_inside_a_passed_run_makes_the_report_partial() -> None:
    no_counter = gpu_result()
    no_counter["energy"]["source"] = "nvml_power"

    report = gpucheck.assemble(PROBE_ONE_GPU, {"pytorch": gpucheck.check_result(no_counter)})

    assert report["runs"]["pytorch"]["status"] == "pass"
    assert report["status"] == "partial"
    assert [s.split(":")[0] for s in report["skipped"]] == ["pytorch.energy_counter_vs_power"]


def test_a_failure_or_nothing_run_is_a_fail_even_with_skips() -> None:
    passed = gpucheck.check_result(gpu_result())
    only_skips = {"image": gpucheck.Run("skip", "no docker")}
    with_error = {
        "pytorch": passed,
        "vllm": gpucheck.Run("skip", "x"),
        "image": gpucheck.Run("fail", "y"),
    }

    for runs in (only_skips, with_error, {}):
        report = gpucheck.assemble(PROBE_ONE_GPU, runs)
        assert (report["status"], gpucheck.exit_code(report)) == ("fail", 1), runs


def test_no_gpu_report_carries_the_preparation_that_passed() -> None:
    prepared = {"venv": "from the bundle", "lem": "lem 0.1.0", "tiny_model": "/w/models/tiny"}

    report = gpucheck.assemble({"no_gpu": "NVML cannot start"}, {}, prepared)

    assert (report["status"], report["preparation"]) == ("no_gpu", prepared)


def test_no_gpu_report_exits_3_with_the_reason() -> None:
    report = gpucheck.assemble({"no_gpu": "NVML cannot start"}, {})

    assert (report["status"], report["reason"], gpucheck.exit_code(report)) == (
        "no_gpu",
        "NVML cannot start",
        3,
    )


def test_unreadable_result_is_a_failed_run(tmp_path: Path) -> None:
    broken = tmp_path / "result.json"
    broken.write_text('{"energy": {}}', encoding="utf-8")

    run = gpucheck.load_run(broken)

    assert run.status == "fail" and "KeyError" in str(run.reason)


def test_report_command_prints_one_json_document(tmp_path: Path, capsys: Any) -> None:
    probe, result = tmp_path / "probe.json", tmp_path / "result.json"
    probe.write_text(json.dumps(PROBE_ONE_GPU), encoding="utf-8")
    result.write_text(json.dumps(gpu_result(baseline_w=5.0)), encoding="utf-8")

    code = gpucheck.main(
        ["report", "--probe", str(probe), "--run", f"pytorch={result}", "--skip", "vllm=absent"]
    )

    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["status"] == "fail"
    (idle,) = [c for c in report["runs"]["pytorch"]["checks"] if c["name"] == "idle_baseline"]
    assert idle["status"] == "fail" and "5.0 W" in idle["detail"]


class ProbeNvml(FakeNvml):
    """The fake with the one call the probe adds (checked against the real pynvml)."""

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")


def test_probe_lists_gpus_with_their_power_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ProbeNvml(gpus(2, power_limit_mw=350_000))
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    probed = gpucheck.probe()

    assert [gpu["power_limit_w"] for gpu in probed["gpus"]] == [350.0, 350.0]
    assert probed["driver_version"] == "550.54.15" and fake.calls[-1] == "nvmlShutdown"


def test_probe_without_driver_says_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", ProbeNvml([], driver_loaded=False))

    assert "NVML cannot start" in gpucheck.probe()["no_gpu"]


@pytest.mark.parametrize("backend", ["pytorch", "vllm"])
def test_experiment_configs_are_valid_for_the_package(backend: str) -> None:
    data = gpucheck.experiment_config(backend, "/models/tiny", 20.0)

    config = parse_experiment(data, "gpu-check")

    assert config.backend == backend and config.measurement.min_window_seconds == 20.0
    assert config.precision == "float16"


def test_the_compose_file_gives_one_gpu_service_on_the_work_dir(
    tmp_path: Path, capsys: Any
) -> None:
    code = gpucheck.main(
        ["render-compose", str(COMPOSE_TEMPLATE), str(tmp_path), "lem-pytorch:0.1.0"]
    )

    compose = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    service = compose["services"]["pytorch"]
    assert list(compose["services"]) == ["pytorch"] and service["image"] == "lem-pytorch:0.1.0"
    assert compose["name"] == "lem-gpu-check"
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert {"source": str(tmp_path / "models"), "target": "/models"}.items() <= (
        service["volumes"][1].items()
    )


def python_without_nvml(where: Path) -> Path:
    """A bare venv of this interpreter: no pynvml, no package dependencies."""
    venv.create(where, with_pip=False, system_site_packages=False)
    return where / "bin" / "python"


def test_script_whose_preparation_fails_says_fail_in_one_json_report(tmp_path: Path) -> None:
    """Preparation comes before the probe: a bundle that cannot install is the gate's own
    failure, never `no_gpu` (tests/integration/test_gpu_check_bundle.py: the passing case)."""
    empty_wheelhouse = tmp_path / "wheelhouse"
    (empty_wheelhouse / "deps").mkdir(parents=True)
    work = tmp_path / "work"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHON": str(python_without_nvml(tmp_path / "bare")),
        "LEM_GPU_CHECK_VENV": str(tmp_path / "gpu-venv"),
        "LEM_GPU_CHECK_WHEELHOUSE": str(empty_wheelhouse),
        "LEM_GPU_CHECK_WORK": str(work),
    }

    completed = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=False)

    report = json.loads(completed.stdout)  # the whole stdout is one JSON document
    assert (completed.returncode, report["status"]) == (1, "fail"), completed.stderr
    assert "no pip wheel" in report["runs"]["venv"]["reason"]
    assert report["preparation"] == {} and report["work_dir"] == str(work)
    assert json.loads((work / "report.json").read_text(encoding="utf-8")) == report
    assert (work / "logs" / "setup.log").exists()


def test_script_without_python_still_prints_json(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHON": str(tmp_path / "no-python"),
        "LEM_GPU_CHECK_WORK": str(tmp_path / "work"),
    }

    completed = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=False)

    assert completed.returncode == 1
    assert json.loads(completed.stdout)["status"] == "fail"


def test_the_knob_step_locks_reads_back_and_resets(tmp_path: Path) -> None:
    state = tmp_path / "knobs.json"
    with installed(FakeNvml(gpus(1))) as lib:
        run = gpucheck.knob_step(state)
        assert lib.gpus[0].sm_clock_mhz == 1980  # reset
    assert run.status == "pass", run
    lock, reset = run.checks
    assert lock.values["applied"] == lock.values["asked"] != 1980
    assert reset.values["after_reset"] == 1980
    assert not state.exists()


def test_the_knob_step_without_root_is_skipped_with_the_reason(tmp_path: Path) -> None:
    with installed(FakeNvml(gpus(1, knobs_permitted=False))):
        run = gpucheck.knob_step(tmp_path / "knobs.json")
    assert run.status == "skip"
    assert "NO_PERMISSION" in str(run.reason)


def test_a_lock_that_does_not_read_back_fails_the_step(tmp_path: Path) -> None:
    class Ignored(FakeNvml):
        def nvmlDeviceSetGpuLockedClocks(self, handle: int, low: int, high: int) -> None:
            pass  # the driver accepts the call and leaves the clock where it was

    with installed(Ignored(gpus(1))):
        run = gpucheck.knob_step(tmp_path / "knobs.json")
    assert run.status == "fail"
    assert run.checks[0].status == "fail"


def test_the_report_takes_the_knob_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    knob_file = tmp_path / "knobs.json"
    with installed(FakeNvml(gpus(1, knobs_supported=False))):
        knob_file.write_text(json.dumps(asdict(gpucheck.knob_step(tmp_path / "s.json"))))
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"gpus": [{"index": 0}]}))
    code = gpucheck.main(["report", "--probe", str(probe), "--knobs", str(knob_file)])
    report = json.loads(capsys.readouterr().out)
    assert report["runs"]["knobs"]["status"] == "fail"
    assert "Not Supported" in report["runs"]["knobs"]["reason"]
    assert (code, report["status"]) == (gpucheck.EXIT_FAIL, "fail")
