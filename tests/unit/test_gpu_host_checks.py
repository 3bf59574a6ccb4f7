"""lem_services' GPU host check (roles/lem_services/tasks/gpu.yml), run by ansible-playbook.

The NVIDIA binaries are stand-in shell scripts on PATH (no GPU here): the check only
looks for them, as dockerd does for nvidia-container-runtime-hook.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.ansible import REPO, PlaybookRun, localhost_play, run_playbook

GPU_TASKS = REPO / "roles" / "lem_services" / "tasks" / "gpu.yml"
REFUSAL = "Refuse GPU services without the NVIDIA driver and container toolkit"


def run_gpu_check(tmp_path: Path, binaries: list[str]) -> PlaybookRun:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in binaries:
        stand_in = bin_dir / name
        stand_in.write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n", encoding="utf-8")
        stand_in.chmod(0o755)
    # Only the stand-ins and the base system: a real toolkit on this machine must not count.
    path = f"{bin_dir}:/usr/bin:/bin"
    play = localhost_play([{"ansible.builtin.include_tasks": str(GPU_TASKS)}])
    play["environment"] = {"PATH": path}
    return run_playbook(tmp_path, [play], env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})


@pytest.mark.parametrize(
    "binaries",
    [["nvidia-smi"], ["nvidia-smi", "nvidia-container-cli"]],
    ids=["no-toolkit", "cli-without-hook"],
)
def test_gpu_host_without_the_runtime_hook_is_refused(tmp_path: Path, binaries: list[str]) -> None:
    if any((Path(d) / "nvidia-container-runtime-hook").exists() for d in ("/usr/bin", "/bin")):
        pytest.fail("this machine has the real hook in /usr/bin: the test cannot hide it")

    run = run_gpu_check(tmp_path, binaries)

    result = run.task_result(REFUSAL)
    assert run.returncode != 0 and result.get("failed") is True
    assert "nvidia-container-runtime-hook is not on PATH" in result["msg"]
    assert "nvidia-ctk runtime configure --runtime=docker" in result["msg"]


def test_gpu_host_with_driver_and_runtime_hook_passes(tmp_path: Path) -> None:
    run = run_gpu_check(tmp_path, ["nvidia-smi", "nvidia-container-runtime-hook"])

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.task_result(REFUSAL).get("skipped") is True


def test_gpu_host_without_driver_names_the_driver(tmp_path: Path) -> None:
    run = run_gpu_check(tmp_path, ["nvidia-container-runtime-hook"])

    message = run.task_result(REFUSAL)["msg"]
    assert run.returncode != 0
    assert "nvidia-smi -L fails" in message and "install the NVIDIA driver" in message
