"""The GPU hand-over between the services of one compose project, with real Docker.

Two services of the CPU image (the template's pytorch service and a copy of it): the
first serves an experiment and keeps its model loaded; the second has its worker
socket hidden, so its release fails. The lem_experiments role's real release.yml
(run by ansible-playbook) then releases the first through `docker compose exec ...
lem release` (model unloaded, worker and container kept) and restarts the second,
counted as a restart; the next experiment in the first service loads its model again.
The role's third service, the segment's holder, is listed but not in the project:
release.yml never touches the holder.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.ansible import REPO, localhost_play, run_playbook
from fixtures.campaign import compose_down
from fixtures.compose import cpu_host_variables, render_compose
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

FIRST, SECOND = "pytorch", "pytorch-b"
MODEL = "/lem/state/models/tiny"


@dataclass(frozen=True)
class Project:
    name: str
    compose_dir: Path
    state_dir: Path

    def compose(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [
            "docker",
            "compose",
            "-p",
            self.name,
            "-f",
            str(self.compose_dir / "compose.yml"),
        ]
        return subprocess.run([*command, *argv], capture_output=True, text=True, check=check)

    def exec(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, *argv)

    def worker_stats(self, service: str) -> dict[str, Any]:
        return json.loads(self.exec(service, "lem", "worker", "--status").stdout)

    def started_at(self, service: str) -> str:
        container = self.compose("ps", "-q", service).stdout.strip()
        inspect = ["docker", "inspect", "-f", "{{.State.StartedAt}}", container]
        return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()

    def experiment(self, service: str, out: str) -> dict[str, Any]:
        self.exec(
            service, "lem", "experiment", "/lem/state/tiny.json", "--out", f"/lem/state/{out}"
        )
        return json.loads((self.state_dir / out / "result.json").read_text(encoding="utf-8"))


@pytest.fixture
def project(docker_engine: DockerClient, cpu_image: str, tmp_path: Path) -> Iterator[Project]:
    """The template's CPU project plus a second service, a copy of the first; up, healthy."""
    state_dir, models_dir, compose_dir = (tmp_path / d for d in ("state", "models", "compose"))
    for directory in (state_dir, models_dir, compose_dir):
        directory.mkdir()
    name = f"lem-handover-{uuid.uuid4().hex[:8]}"
    variables = cpu_host_variables(name, cpu_image, state_dir, models_dir, lem_health_interval="1s")
    compose = yaml.safe_load(render_compose(variables))
    compose["services"][SECOND] = copy.deepcopy(compose["services"][FIRST])
    (compose_dir / "compose.yml").write_text(yaml.safe_dump(compose), encoding="utf-8")
    running = Project(name, compose_dir, state_dir)
    try:
        running.compose("up", "--detach", "--wait")
        yield running
    finally:
        compose_down(name)


def hand_over(project: Project, workdir: Path) -> dict[str, Any]:
    """release.yml of the lem_experiments role for a segment of the holder service."""
    compose = {
        "project_src": str(project.compose_dir),
        "project_name": project.name,
        "files": [str(project.compose_dir / "compose.yml")],
        "services": [FIRST, SECOND, "holder"],
        "wait_timeout": 300,
    }
    tasks = [
        {
            "name": "start the run's counters",
            "ansible.builtin.set_fact": {
                "lem_experiments_holder": "",
                "lem_experiments_run_id": "run-1",
            },
        },
        {
            "name": "hand over",
            "ansible.builtin.include_role": {"name": "lem_experiments", "tasks_from": "release"},
            "vars": {
                "lem_services_compose": compose,
                "lem_experiments_segment": {"cycle": 1, "service": "holder"},
                "lem_host_state_dir": str(project.state_dir),
                "lem_host_campaign": {"health_check": {"max_restarts": 3}},
            },
        },
        {
            "name": "report",
            "ansible.builtin.debug": {
                "msg": {
                    "holder": "{{ lem_experiments_holder }}",
                    "restarts": "{{ lem_experiments_restart.restarts_spent }}",
                    "releases": "{{ lem_experiments_releases.results | map(attribute='item') | "
                    "zip(lem_experiments_releases.results | map(attribute='rc'), "
                    "lem_experiments_releases.results | map(attribute='stdout')) | list }}",
                }
            },
        },
    ]
    run = run_playbook(
        workdir, [localhost_play(tasks)], env={"ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.task_result("report")["msg"]


def test_a_release_unloads_in_place_and_a_failed_one_restarts_the_service(
    project: Project, tmp_path: Path
) -> None:
    config = {
        "config_name": "tiny",
        "backend": "pytorch",
        "model": {"path": MODEL},
        "decoder": {"max_new_tokens": 8},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 2},
        "measurement": {"warmup_prompts": 1, "min_window_seconds": 0.5, "baseline_seconds": 0},
    }
    (project.state_dir / "tiny.json").write_text(json.dumps(config), encoding="utf-8")
    project.exec(FIRST, "lem", "model", "tiny", "--out", MODEL)
    first = project.experiment(FIRST, "first")
    before = project.worker_stats(FIRST)
    started = {service: project.started_at(service) for service in (FIRST, SECOND)}
    project.exec(SECOND, "mv", "/run/lem/worker.sock", "/run/lem/hidden.sock")

    report = hand_over(project, tmp_path)

    releases = {item: (rc, json.loads(stdout)) for item, rc, stdout in report["releases"]}
    rc, released = releases["pytorch"]
    assert (rc, released["released"], released["unloaded_model"]) == (0, True, MODEL)
    rc, refused = releases["pytorch-b"]
    assert (rc, refused) == (
        2,
        {"released": False, "error": "no worker socket at /run/lem/worker.sock"},
    )
    assert (report["holder"], int(report["restarts"])) == ("holder", 1)
    # The first service: model unloaded, same worker, same container.
    after = project.worker_stats(FIRST)
    assert (before["loaded_model"], after["loaded_model"], after["loaded_key"]) == (
        MODEL,
        None,
        None,
    )
    assert (after["pid"], after["loads"]) == (before["pid"], 1)
    assert project.started_at(FIRST) == started[FIRST]
    # The second: restarted, and its fresh worker answers.
    assert project.started_at(SECOND) != started[SECOND]
    assert project.worker_stats(SECOND)["loads"] == 0
    # The next experiment in the first service loads the model again.
    again = project.experiment(FIRST, "again")
    assert first["timing"]["model_reused"] is False
    assert (again["timing"]["model_reused"], again["timing"]["cold_start_method"]) == (
        False,
        "unload",
    )
    assert project.worker_stats(FIRST)["loads"] == 2
