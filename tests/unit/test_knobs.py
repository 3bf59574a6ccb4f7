"""GPU knobs on the host (dispatch/knobs.py) against the NVML fake bound to pynvml's names:
set, read back, reset, refusal out of range, no permission, MIG, not supported, and the
restore a crashed run leaves to the next one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.fake_nvml import FakeNvml, gpus, installed
from fixtures.load import load_module

from llenergymeasure.dispatch import knobs
from llenergymeasure.dispatch.execute import experiment_argv
from llenergymeasure.dispatch.knobs import KnobError

LEM_GPU_KNOBS = load_module(
    Path(__file__).resolve().parents[2] / "library" / "lem_gpu_knobs.py", "lem_gpu_knobs"
)


def fake(**overrides: object) -> FakeNvml:
    return FakeNvml(gpus(2, **overrides))


def test_apply_sets_every_knob_reads_it_back_and_records_the_range(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    setting = {"sm_clock_mhz": 1200, "mem_clock_mhz": 1593, "power_limit_w": 300}
    with installed(fake()) as lib:
        records = knobs.apply([1], setting, state)
        gpu = lib.gpus[1]
        assert (gpu.sm_clock_mhz, gpu.mem_clock_mhz, gpu.power_limit_mw) == (1200, 1593, 300_000)
        assert lib.gpus[0].sm_clock_mhz == 1980  # the other lane's GPU is untouched
    by_knob = {record.knob: record for record in records}
    assert by_knob["sm_clock_mhz"].applied == 1200.0
    assert by_knob["power_limit_w"].applied == 300.0
    assert (by_knob["power_limit_w"].supported_min, by_knob["power_limit_w"].supported_max) == (
        200,
        700,
    )
    assert (by_knob["mem_clock_mhz"].supported_min, by_knob["mem_clock_mhz"].supported_max) == (
        1593,
        2619,
    )
    assert json.loads(state.read_text())["setting"] == setting


def test_restore_resets_the_clocks_and_puts_the_power_limit_back(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    with installed(fake(power_limit_mw=650_000)) as lib:
        knobs.apply([0], {"sm_clock_mhz": 900, "power_limit_w": 250}, state)
        lines = knobs.restore(state)
        gpu = lib.gpus[0]
        assert (gpu.sm_clock_mhz, gpu.power_limit_mw) == (1980, 650_000)
    assert len(lines) == 2
    assert not state.exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"sm_clock_mhz": 2500}, r"gpu.sm_clock_mhz=2500 is outside GPU 0's .* 345..1980"),
        ({"mem_clock_mhz": 3000}, r"gpu.mem_clock_mhz=3000 .* range 1593..2619"),
        ({"power_limit_w": 100}, r"gpu.power_limit_w=100 .* range 200..700"),
    ],
)
def test_a_value_out_of_range_is_refused_before_anything_changes(
    tmp_path: Path, setting: dict[str, int], message: str
) -> None:
    state = tmp_path / "gpu-knobs.json"
    with installed(fake()) as lib:
        with pytest.raises(KnobError, match=message):
            knobs.apply([0], {"power_limit_w": 300, **setting}, state)
        assert not [call for call in lib.calls if call.startswith(("lock_", "power_limit"))]
    assert not state.exists()


def test_no_permission_is_named_and_nothing_is_left_set(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    match = r"gpu.sm_clock_mhz=900 on GPU 0: .*NO_PERMISSION"
    with installed(fake(knobs_permitted=False)), pytest.raises(KnobError, match=match):
        knobs.apply([0], {"sm_clock_mhz": 900}, state)
    assert not state.exists()


def test_a_card_without_the_knob_is_named(tmp_path: Path) -> None:
    match = r"gpu.power_limit_w=300 .*NOT_SUPPORTED"
    with installed(fake(knobs_supported=False)), pytest.raises(KnobError, match=match):
        knobs.apply([0], {"power_limit_w": 300}, tmp_path / "s.json")


def test_a_mig_gpu_is_refused(tmp_path: Path) -> None:
    with installed(fake(mig_mode=1)) as lib:
        with pytest.raises(KnobError, match="GPU 0 is in MIG mode"):
            knobs.apply([0], {"sm_clock_mhz": 900}, tmp_path / "s.json")
        assert lib.gpus[0].sm_clock_mhz == 1980


def test_a_host_without_a_gpu_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    no_gpu = FakeNvml([], driver_loaded=False)
    with installed(no_gpu), pytest.raises(KnobError, match="needs an NVIDIA GPU"):
        knobs.apply([0], {"sm_clock_mhz": 900}, tmp_path / "s.json")


def test_a_failed_change_undoes_the_ones_before_it(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"

    class PowerRefused(FakeNvml):
        def nvmlDeviceSetPowerManagementLimit(self, handle: int, limit: int) -> None:
            raise self.NVMLError(self.NVML_ERROR_NO_PERMISSION)

    with installed(PowerRefused(gpus(1))) as lib:
        with pytest.raises(KnobError, match="power_limit_w=300"):
            knobs.apply([0], {"sm_clock_mhz": 900, "power_limit_w": 300}, state)
        assert lib.gpus[0].sm_clock_mhz == 1980
        assert "reset_sm" in lib.calls
    assert not state.exists()  # all that was changed is back


def test_a_crash_with_a_knob_set_is_restored_first_by_the_next_run(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    with installed(fake(power_limit_mw=700_000)) as lib:
        knobs.apply([0], {"sm_clock_mhz": 900, "power_limit_w": 250}, state)
        # the run is killed here: nothing restores; the state file stays on the host
        lib.calls.clear()
    assert state.exists()
    with installed(fake(sm_clock_mhz=900, power_limit_mw=250_000)) as lib:  # the GPU as left
        knobs.apply([0], {"mem_clock_mhz": 1593}, state)
        restoring = lib.calls.index("reset_sm")
        assert lib.calls.index("power_limit:700000") < lib.calls.index("lock_mem:1593")
        assert restoring < lib.calls.index("lock_mem:1593")
        assert (lib.gpus[0].sm_clock_mhz, lib.gpus[0].power_limit_mw) == (1980, 700_000)
    assert json.loads(state.read_text())["setting"] == {"mem_clock_mhz": 1593}


def test_a_state_file_that_does_not_parse_stops_the_run(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    state.write_text("{not json")
    with installed(fake()), pytest.raises(KnobError, match="does not parse"):
        knobs.apply([0], {"sm_clock_mhz": 900}, state)


def test_no_state_file_means_nothing_to_restore(tmp_path: Path) -> None:
    with installed(FakeNvml([], driver_loaded=False)):
        assert knobs.restore(tmp_path / "none.json") == []


def module_params(state_file: Path, **changes: object) -> dict[str, object]:
    """lem_gpu_knobs's parameters, defaults filled in as AnsibleModule does."""
    defaults = {k: v.get("default") for k, v in LEM_GPU_KNOBS.ARGUMENT_SPEC.items()}
    return {**defaults, "state_file": str(state_file), **changes}


def test_the_module_s_check_refuses_a_run_before_any_change(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    settings = [{"sm_clock_mhz": 900}, {"sm_clock_mhz": 3000}]
    with installed(fake()) as lib, pytest.raises(KnobError, match="sm_clock_mhz=3000"):
        knobs.knob_outcome(module_params(state, state="checked", settings=settings), False)
    assert not [call for call in lib.calls if call.startswith(("lock_", "reset_"))]


@pytest.mark.parametrize("driver_loaded", [False, True], ids=["no-driver", "no-gpu"])
def test_the_module_s_check_refuses_knobs_on_a_host_without_a_gpu(
    tmp_path: Path, driver_loaded: bool
) -> None:
    params = module_params(tmp_path / "s.json", state="checked", settings=[{"sm_clock_mhz": 900}])
    no_gpu = FakeNvml([], driver_loaded=driver_loaded)
    with installed(no_gpu), pytest.raises(KnobError, match="needs an NVIDIA GPU"):
        knobs.knob_outcome(params, False)


def test_check_mode_changes_nothing_and_says_what_would(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    with installed(fake()) as lib:
        knobs.apply([0], {"sm_clock_mhz": 900}, state)
        before = state.read_text()
        outcome = knobs.knob_outcome(module_params(state, state="restored"), True)
        assert outcome["changed"] is True
        assert lib.gpus[0].sm_clock_mhz == 900
    assert state.read_text() == before


def test_the_module_applies_on_the_lane_s_gpus_only(tmp_path: Path) -> None:
    state = tmp_path / "gpu-knobs.json"
    params = module_params(state, setting={"sm_clock_mhz": 900}, device_ids=["1"])
    with installed(fake()) as lib:
        outcome = knobs.knob_outcome(params, False)
        assert [g.sm_clock_mhz for g in lib.gpus] == [1980, 900]
    assert outcome["knobs"][0] | {"supported_min": 0} == {
        "knob": "sm_clock_mhz",
        "gpu_index": 1,
        "asked": 900,
        "applied": 900.0,
        "supported_min": 0,
        "supported_max": 1980,
    }


def test_the_exec_passes_the_applied_knobs_to_lem_experiment(tmp_path: Path) -> None:
    record = {"knob": "sm_clock_mhz", "gpu_index": 0, "asked": 900, "applied": 900.0}
    params = {
        "container_state_dir": "/lem/state",
        "exp_id": "demo__a__c01",
        "config_hash": "0123456789abcdef",
        "cycle": 1,
        "campaign_name": "demo",
        "host": "localhost",
        "cold_start": False,
        "timeout": 0,
    }
    assert "--gpu-knobs" not in experiment_argv(params | {"gpu_knobs": []}, 0.0)
    argv = experiment_argv(params | {"gpu_knobs": [record]}, 0.0)
    assert json.loads(argv[argv.index("--gpu-knobs") + 1]) == [record]
