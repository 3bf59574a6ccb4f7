"""lem_experiments' first knob tasks (roles/lem_experiments/tasks/knobs_first.yml), run by
ansible-playbook with the real lem_gpu_knobs module on this machine, which has no GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fixtures.ansible import REPO, PlaybookRun, localhost_play, run_playbook

KNOB_TASKS = REPO / "roles" / "lem_experiments" / "tasks" / "knobs_first.yml"
CHECK = "Check the run's GPU settings against the GPUs"


def entry(name: str, gpu: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "exp_id": f"demo__{name}__c01",
        "config_name": name,
        "cycle": 1,
        "backend": "pytorch",
        "service": "pytorch",
        "config": {"config_name": name, "gpu": gpu},
    }


def run_first_tasks(tmp_path: Path, pending: list[dict[str, Any]]) -> PlaybookRun:
    play = localhost_play([{"ansible.builtin.include_tasks": str(KNOB_TASKS)}])
    play["vars"] |= {
        "lem_host_pending": pending,
        "lem_experiments_knob_state_file": str(tmp_path / "gpu-knobs-localhost.json"),
        "lem_experiments_knob_device_ids": [],
        "lem_experiments_knobs_become": False,
    }
    return run_playbook(tmp_path, [play])


def test_a_campaign_with_knobs_is_refused_on_a_host_without_a_gpu(tmp_path: Path) -> None:
    run = run_first_tasks(tmp_path, [entry("a", None), entry("b", {"sm_clock_mhz": 900})])

    result = run.task_result(CHECK)
    assert run.returncode != 0 and result.get("failed") is True, run.stdout
    assert "a campaign with a gpu section needs an NVIDIA GPU" in result["msg"]


def test_a_campaign_without_knobs_needs_no_gpu(tmp_path: Path) -> None:
    run = run_first_tasks(tmp_path, [entry("a", None), entry("b", {"sm_clock_mhz": None})])

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.task_result(CHECK).get("skipped") is True


def test_a_setting_a_killed_run_left_is_restored_before_anything_else(tmp_path: Path) -> None:
    # A run killed with a knob set left its state file. This host has no NVML to restore
    # with, so the restore fails: the run stops there, before the check and any experiment,
    # and the file stays for the next try.
    state = tmp_path / "gpu-knobs-localhost.json"
    state.write_text(
        '{"version": 1, "setting": {"sm_clock_mhz": 900},'
        ' "changes": [{"gpu_index": 0, "knob": "sm_clock_mhz", "original_mw": null}]}'
    )
    run = run_first_tasks(tmp_path, [entry("a", None)])

    result = run.task_result("Restore the GPU settings a killed run left")
    assert run.returncode != 0 and result.get("failed") is True
    assert "could not restore the GPU" in result["msg"] and "state file is kept" in result["msg"]
    assert CHECK not in run.stdout
    assert state.exists()
