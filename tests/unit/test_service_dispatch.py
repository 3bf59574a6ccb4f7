"""Each experiment runs in its plan entry's service, and the GPU hand-over treats two
services of one backend (vllm and vllm-0.33.0) like two backends: the lem_experiments
role's real segment.yml and release.yml, run by ansible-playbook against localhost.

The compose project is the template's, rendered for a campaign with vllm.version
[0.11.1, 0.33.0]; nothing is started (`docker compose config` reads it without an engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.ansible import REPO, PlaybookRun, localhost_play, run_playbook
from fixtures.compose import cpu_host_variables, render_compose

from llenergymeasure.contracts.identity import config_hash_of
from llenergymeasure.contracts.services import service_of

SERVICES = ["pytorch", "vllm", "vllm-0.33.0"]
ROLE = "lem_experiments : "
RELEASE = ROLE + "Ask the other services to release the GPU"
RUN = ROLE + "Run the segment's experiments"


def planned(name: str, backend: str, version: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"config_name": name, "backend": backend}
    if version:
        config["vllm"] = {"version": version}
    return {
        "exp_id": f"demo__{name}__c01",
        "config_name": name,
        "cycle": 1,
        "backend": backend,
        "service": service_of(config),
        "config": config,
        "config_hash": config_hash_of(config),
        "gap_seconds": 0.0,
    }


def compose(tmp_path: Path) -> dict[str, Any]:
    """lem_services_compose of a project with the three services, its file rendered."""
    variables = cpu_host_variables("lem-dispatch", "lem-x:1", tmp_path, tmp_path)
    variables |= {
        "lem_services": {"pytorch": "pytorch", "vllm": "vllm", "vllm-0.33.0": "vllm"},
        "lem_images": {name: f"lem-{name}:1" for name in SERVICES},
    }
    (tmp_path / "compose.yml").write_text(render_compose(variables), encoding="utf-8")
    return {
        "project_name": "lem-dispatch",
        "project_src": str(tmp_path),
        "files": [str(tmp_path / "compose.yml")],
        "services": SERVICES,
        "wait_timeout": 60,
    }


def run_tasks(
    tmp_path: Path, tasks_from: str, segment: dict[str, Any], *options: str, holder: str = ""
) -> PlaybookRun:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    campaign = {
        "campaign_name": "demo",
        "execution": {"gap_mode": "fixed", "thermal_temp_tolerance_c": 2.0,
                      "thermal_power_tolerance_pct": 10.0},
        "failures": {"retry_failed_on_resume": True},
        "cold_start": {"force_cold_start": False},
        "health_check": {"enabled": False, "max_restarts": 0, "gpu_memory_threshold_pct": 90},
    }  # fmt: skip
    tasks = [
        {
            "name": "start the run",
            "ansible.builtin.set_fact": {
                "lem_experiments_holder": holder,
                "lem_experiments_run_id": "run-1",
                "lem_experiments_failed": [],
            },
        },
        {
            "name": "the role's tasks",
            "ansible.builtin.include_role": {"name": "lem_experiments", "tasks_from": tasks_from},
            "vars": {
                "lem_services_compose": compose(tmp_path),
                "lem_experiments_segment": segment,
                "lem_host_state_dir": str(state),
                "lem_host_campaign": campaign,
            },
        },
        {"name": "report", "ansible.builtin.debug": {"var": "lem_experiments_holder"}},
    ]
    env = {"ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    return run_playbook(tmp_path, [localhost_play(tasks)], options=options, env=env)


def segment_of(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"cycle": 1, "service": entries[0]["service"], "gpu": None, "experiments": list(entries)}


@pytest.mark.parametrize(
    ("entries", "service"),
    [
        ([planned("new", "vllm", "0.33.0"), planned("new-bs8", "vllm", "0.33.0")], "vllm-0.33.0"),
        ([planned("old", "vllm", "0.11.1")], "vllm"),
        ([planned("p", "pytorch")], "pytorch"),
    ],
)
def test_each_experiment_runs_in_its_version_s_service(
    tmp_path: Path, entries: list[dict[str, Any]], service: str
) -> None:
    run = run_tasks(tmp_path, "segment", segment_of(*entries), "--check", holder=service)

    results = run.task_result(RUN)["results"]
    assert [r["invocation"]["module_args"]["service"] for r in results] == [service] * len(
        entries
    ), run.stdout[-3000:]


def test_the_gpu_goes_from_the_other_vllm_version_and_every_other_service(
    tmp_path: Path,
) -> None:
    segment = segment_of(planned("new", "vllm", "0.33.0"))

    run = run_tasks(tmp_path, "release", segment, holder="vllm")

    releases = run.task_result(RELEASE)["results"]
    assert [r["item"] for r in releases] == ["pytorch", "vllm"], run.stdout[-3000:]
    # Nothing runs in this project: both releases fail, no restart is left in the budget
    # (max_restarts 0), so the segment's service does not become the holder.
    assert run.task_result(ROLE + "Say which services did not release the GPU")["msg"].startswith(
        "Not released for vllm-0.33.0: pytorch"
    )
    assert run.task_result(ROLE + "Restart the services that kept the GPU")["left"] == [
        "pytorch",
        "vllm",
    ]
    assert run.task_result("report")["lem_experiments_holder"] == "vllm"


def test_a_segment_of_the_holder_s_service_hands_nothing_over(tmp_path: Path) -> None:
    segment = segment_of(planned("new", "vllm", "0.33.0"))

    run = run_tasks(tmp_path, "segment", segment, "--check", holder="vllm-0.33.0")

    assert run.task_result(ROLE + "Hand the GPU over to vllm-0.33.0").get("skipped") is True


# What lem_services' main.yml sets before images.yml.
NEEDED = "{{ lem_test_pending | lem_services(lem_services_image_variants) }}"


def run_images(tmp_path: Path, pending: list[dict[str, Any]], **variables: Any) -> PlaybookRun:
    """lem_services' images.yml in check mode (nothing built, no engine asked), after the
    role's own listing of the services: one image build per service."""
    tasks = [
        {
            "name": "the role's images",
            "ansible.builtin.include_role": {"name": "lem_services", "tasks_from": "images"},
            "vars": {
                "lem_services_needed": NEEDED,
                "lem_services_compose": {"services": "{{ lem_services_needed | list }}"},
                "lem_test_pending": pending,
                "lem_services_build_images_script": "/opt/build-images.sh",
                **variables,
            },
        }
    ]
    env = {"ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    return run_playbook(tmp_path, [localhost_play(tasks)], options=("--check",), env=env)


def test_each_vllm_version_gets_its_own_image_build(tmp_path: Path) -> None:
    pending = [
        planned("old", "vllm", "0.11.1"),
        planned("new", "vllm", "0.33.0"),
        planned("p", "pytorch"),
    ]

    run = run_images(tmp_path, pending)

    builds = run.task_result("lem_services : Build the images on the controller")["results"]
    assert sorted(r["item"] for r in builds) == [
        ["--backend", "pytorch-cpu"],
        ["--backend", "vllm"],
        ["--backend", "vllm", "--engine-version", "0.33.0"],
    ], run.stdout[-3000:]


def test_a_prebuilt_host_needs_a_tag_for_each_service(tmp_path: Path) -> None:
    pending = [planned("old", "vllm", "0.11.1"), planned("new", "vllm", "0.33.0")]

    run = run_images(
        tmp_path,
        pending,
        lem_services_image_source="prebuilt",
        lem_services_images={"vllm": "lem-vllm:1"},
    )

    refused = run.task_result(
        "lem_services : Refuse a prebuilt host without an image for each service"
    )
    assert run.returncode != 0 and refused.get("failed") is True
    assert "lem_services_images has no tag for service(s) vllm-0.33.0" in refused["msg"]
