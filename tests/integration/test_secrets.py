"""A Hugging Face token given to a campaign reaches the services' environment, and nowhere else.

The token is a fresh random string, passed the way docs/reliability.md tells users to:
through `lem_services_environment` (the compose file passes HF_TOKEN through to the
services, so the worker that loads models has it) and `lem_experiments_environment`
(each experiment's exec), both read on the controller from an environment variable, so
that not even the extra-vars file holds it. The campaign runs for real, with `-v` (the
session's shared campaign, tests/fixtures/shared_campaign.py: four runs, one refused,
one in check mode); then every file the runs wrote, their output and the services' logs
are searched for the token.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from fixtures.ansible import localhost_play, run_playbook
from fixtures.campaign import (
    REPO,
    compose_down,
    manifest_entries,
    unique_name,
)
from fixtures.compose import cpu_host_variables, render_compose
from fixtures.shared_campaign import CAMPAIGN, ON_SHARED_CAMPAIGN, SharedCampaign, exp_id
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker


def compose(project: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-p", project, *args], capture_output=True, text=True, check=False
    )


def files_containing(directory: Path, text: str) -> list[str]:
    """Every file under `directory` whose bytes contain `text`."""
    needle = text.encode()
    return [
        str(path) for path in directory.rglob("*") if path.is_file() and needle in path.read_bytes()
    ]


@ON_SHARED_CAMPAIGN
def test_the_campaign_completes_with_the_token_set(shared_campaign: SharedCampaign) -> None:
    assert shared_campaign.second.returncode == 0, shared_campaign.second.output[-4000:]
    entries = manifest_entries(shared_campaign.host.manifest(CAMPAIGN))
    assert len(entries) == 6
    assert {entry["status"] for entry in entries.values()} == {"completed"}


@ON_SHARED_CAMPAIGN
def test_the_token_reaches_the_service_environment(shared_campaign: SharedCampaign) -> None:
    printed = compose(shared_campaign.host.project, "exec", "-T", "pytorch", "printenv", "HF_TOKEN")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == shared_campaign.token


@ON_SHARED_CAMPAIGN
def test_the_token_is_in_no_file_the_runs_wrote(shared_campaign: SharedCampaign) -> None:
    # results/ (plan, manifests, results, summaries), the host's state and compose dirs,
    # and the extra-vars files the runs were given: the token is none of their bytes.
    assert (shared_campaign.results / "summary.json").is_file()
    state = shared_campaign.host.root / "state" / CAMPAIGN
    assert len(list((state / "results").rglob("result.json"))) == 6
    assert files_containing(shared_campaign.workdir, shared_campaign.token) == []


@ON_SHARED_CAMPAIGN
def test_the_token_is_in_no_output_or_log(shared_campaign: SharedCampaign) -> None:
    logs = compose(shared_campaign.host.project, "logs", "--no-color")
    assert logs.returncode == 0 and logs.stdout  # the worker logs one line per request
    output = shared_campaign.outputs()
    # -v output of the experiment tasks: each one's returned exp_id (the role's name,
    # lem_experiments, is in every task header, so it proves nothing).
    for config in ("bs1", "bs2", "hostile"):
        for cycle in (1, 2):
            assert f'"exp_id": "{exp_id(config, cycle)}"' in output
    assert shared_campaign.token not in output
    assert shared_campaign.token not in logs.stdout + logs.stderr


def test_a_service_restart_keeps_the_token(
    tmp_path: Path, cpu_image: str, docker_engine: DockerClient
) -> None:
    """The hand-over's restart (lem_restart, in release.yml) must not lose HF_TOKEN.

    lem_services brings the service up with the token in `docker compose`'s environment;
    a later `docker compose up` without it would recreate the container without it.
    """
    token = f"hf_{uuid.uuid4().hex}"
    project = unique_name("lem-secrets-restart")
    state_dir, models_dir = tmp_path / "state", tmp_path / "models"
    state_dir.mkdir()
    models_dir.mkdir()
    compose_file = tmp_path / "compose.yml"
    variables = cpu_host_variables(project, cpu_image, state_dir, models_dir)
    compose_file.write_text(render_compose(variables), encoding="utf-8")
    up = subprocess.run(
        ["docker", "compose", "-f", str(compose_file), "-p", project, "up", "--detach", "--wait"],
        env={**os.environ, "HF_TOKEN": token},
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        restart = {
            "name": "under test",
            "lem_restart": {
                "services": ["pytorch"],
                "state_dir": str(state_dir),
                "project_name": project,
                "compose_files": [str(compose_file)],
                "wait_timeout": 120,
            },
        }
        run = run_playbook(
            tmp_path,
            [localhost_play([restart])],
            json_output=False,
            env={"ANSIBLE_ROLES_PATH": str(REPO / "roles")},
        )
        assert run.returncode == 0, run.stdout[-4000:]
        printed = compose(project, "exec", "-T", "pytorch", "printenv", "HF_TOKEN")
        assert printed.stdout.strip() == token, "the restart recreated the service without it"
    finally:
        compose_down(project)
