"""A Hugging Face token given to a campaign reaches the services' environment, and nowhere else.

The token is a fresh random string, passed the way docs/reliability.md tells users to:
through `lem_services_environment` (the compose file passes HF_TOKEN through to the
services, so the worker that loads models has it) and `lem_experiments_environment`
(each experiment's exec), both read on the controller from an environment variable, so
that not even the extra-vars file holds it. The campaign runs for real, with `-v`; then
every file the run wrote, its output and the services' logs are searched for the token.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.ansible import localhost_play, run_playbook
from fixtures.campaign import (
    REPO,
    CampaignRun,
    HostDirs,
    compose_down,
    manifest_entries,
    run_campaign,
    tiny_campaign,
    unique_name,
    write_yaml,
)
from fixtures.compose import cpu_host_variables, render_compose
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

CAMPAIGN = "secrets"
TOKEN_VARIABLE = "LEM_TEST_HF_TOKEN"  # the controller's environment variable holding it
FROM_CONTROLLER_ENV = f"{{{{ lookup('ansible.builtin.env', '{TOKEN_VARIABLE}') }}}}"
LOCAL_INVENTORY = REPO / "inventory" / "local.yml"


@dataclass(frozen=True)
class SecretRun:
    token: str
    workdir: Path
    host: HostDirs
    run: CampaignRun


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


@pytest.fixture(scope="module")
def secret_run(
    tmp_path_factory: pytest.TempPathFactory, docker_engine: DockerClient
) -> Iterator[SecretRun]:
    """The campaign run once with the token; its services kept up for inspection."""
    workdir = tmp_path_factory.mktemp("secrets")
    host = HostDirs(
        root=workdir / "host",
        project=unique_name("lem-secrets"),
        venv=workdir / "venv",
        models=workdir / "models",
    )
    token = f"hf_{uuid.uuid4().hex}"
    campaign = write_yaml(workdir / "campaign.yml", tiny_campaign(CAMPAIGN, batch_sizes=(1,)))
    variables = {
        **host.variables(),
        "lem_campaign_file": str(campaign),
        "lem_results_dir": str(workdir / "results"),
        "lem_services_keep": True,
        "lem_services_environment": {"HF_TOKEN": FROM_CONTROLLER_ENV},
        "lem_experiments_environment": {"HF_TOKEN": FROM_CONTROLLER_ENV},
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(TOKEN_VARIABLE, token)
            patch.setenv("ANSIBLE_VERBOSITY", "1")  # as `-v`: every task's result is printed
            run = run_campaign(LOCAL_INVENTORY, variables, workdir)
        yield SecretRun(token, workdir, host, run)
    finally:
        compose_down(host.project)


def test_the_campaign_completes_with_the_token_set(secret_run: SecretRun) -> None:
    assert secret_run.run.returncode == 0, secret_run.run.output[-4000:]
    entries = manifest_entries(secret_run.host.manifest(CAMPAIGN))
    assert [entry["status"] for entry in entries.values()] == ["completed", "completed"]


def test_the_token_reaches_the_service_environment(secret_run: SecretRun) -> None:
    printed = compose(secret_run.host.project, "exec", "-T", "pytorch", "printenv", "HF_TOKEN")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == secret_run.token


def test_the_token_is_in_no_file_the_run_wrote(secret_run: SecretRun) -> None:
    # results/ (plan, manifests, results, summaries), the host's state and compose dirs,
    # and the extra-vars file the run was given: the token is none of their bytes.
    assert (secret_run.workdir / "results" / CAMPAIGN / "summary.json").is_file()
    assert list((secret_run.host.root / "state" / CAMPAIGN / "results").rglob("result.json"))
    assert files_containing(secret_run.workdir, secret_run.token) == []


def test_the_token_is_in_no_output_or_log(secret_run: SecretRun) -> None:
    logs = compose(secret_run.host.project, "logs", "--no-color")
    assert logs.returncode == 0 and logs.stdout  # the worker logs one line per request
    # -v output of the experiment tasks: each one's returned exp_id (the role's name,
    # lem_experiments, is in every task header, so it proves nothing).
    for cycle in (1, 2):
        assert f'"exp_id": "{CAMPAIGN}__bs1__c{cycle:02d}"' in secret_run.run.output
    assert secret_run.token not in secret_run.run.output
    assert secret_run.token not in logs.stdout + logs.stderr


def test_a_service_restart_keeps_the_token(
    tmp_path: Path, cpu_image: str, docker_engine: DockerClient
) -> None:
    """The hand-over's restart (lem_experiments' restart.yml) must not lose HF_TOKEN.

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
            "ansible.builtin.include_role": {"name": "lem_experiments", "tasks_from": "restart"},
            "vars": {
                "lem_experiments_restart_services": ["pytorch"],
                "lem_services_compose": {
                    "project_src": str(tmp_path),
                    "project_name": project,
                    "wait_timeout": 120,
                },
                "lem_services_environment": {"HF_TOKEN": token},
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
