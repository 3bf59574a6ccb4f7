"""Hostile or wrong input to the campaign playbook (real ansible-playbook, inventory/local.yml).

A bad campaign fails in the controller play, on the task that validates it, with the
message `lem validate` gives; no host task runs and nothing is written: neither the
results directory nor the host's state root comes into being. The last test runs a
whole campaign whose model path is Jinja and shell syntax, to show that Ansible carries
config values as data too.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
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
from python_on_whales import DockerClient

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.errors import ConfigError

CAMPAIGN = "hostile"
LOCAL_INVENTORY = REPO / "inventory" / "local.yml"
TINY_CONFIG = tiny_campaign(CAMPAIGN)["configs"][0]
# Four keys of 1,000 values each: 10^12 combinations, refused before any is built.
HUGE_VARY = {
    key: list(range(1, 1001))
    for key in (
        "decoder.seed",
        "decoder.top_k",
        "decoder.max_new_tokens",
        "measurement.max_window_repeats",
    )
}


def host_dirs(tmp_path: Path) -> HostDirs:
    return HostDirs(
        root=tmp_path / "host",
        project=unique_name("lem-hostile"),
        venv=tmp_path / "venv",
        models=tmp_path / "models",
    )


def campaign_variables(tmp_path: Path, campaign_file: Path | str) -> dict[str, Any]:
    return {
        **host_dirs(tmp_path).variables(),
        "lem_campaign_file": str(campaign_file),
        "lem_results_dir": str(tmp_path / "results"),
    }


def assert_refused_before_any_host_task(run: CampaignRun, tmp_path: Path) -> None:
    assert run.returncode != 0
    assert run.recap()["localhost"]["failed"] == 1
    assert "lem_host :" not in run.output and "lem_services :" not in run.output
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "host").exists()


def grid_campaign(base: dict[str, Any], vary: dict[str, list[Any]]) -> dict[str, Any]:
    return {"campaign_name": CAMPAIGN, "grid": {"base": base, "vary": vary}}


def with_config(**changes: Any) -> dict[str, Any]:
    campaign = tiny_campaign(CAMPAIGN, batch_sizes=(1,), cycles=1)
    campaign["configs"][0].update(changes)
    return campaign


@pytest.mark.parametrize(
    "campaign",
    [
        pytest.param({**with_config(), "campaign_name": "x; touch pwned"}, id="campaign-name-;"),
        pytest.param({**with_config(), "campaign_name": "../escape"}, id="campaign-name-.."),
        pytest.param(with_config(config_name="$(touch pwned)"), id="config-name-$()"),
        pytest.param(with_config(config_name="a/b"), id="config-name-slash"),
        pytest.param(with_config(config_name="a\nb`id`"), id="config-name-newline"),
        pytest.param(with_config(model={"path": "/etc/passwd"}), id="model-outside-mounts"),
        pytest.param(with_config(model={"path": "../models/tiny"}), id="model-relative"),
        pytest.param(with_config(decoder={"max_new_tokens": "8"}), id="wrong-type"),
        pytest.param(with_config(vllm={"max_num_seqs": 8}), id="other-backend-section"),
        pytest.param(
            grid_campaign({**TINY_CONFIG, "decoder": {"beams": 2}}, {"pytorch.batch_size": [1, 2]}),
            id="grid-base-unknown-key",
        ),
        pytest.param(grid_campaign(TINY_CONFIG, HUGE_VARY), id="grid-of-10^12"),
    ],
)
def test_a_bad_campaign_fails_on_the_controller_with_the_validate_message(
    tmp_path: Path, campaign: dict[str, Any]
) -> None:
    campaign_file = write_yaml(tmp_path / "campaign.yml", campaign)
    with pytest.raises(ConfigError) as validate_error:
        load_campaign(campaign_file)
    message = str(validate_error.value)

    run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, campaign_file), tmp_path)

    assert_refused_before_any_host_task(run, tmp_path)
    assert f"Module failed: {message.splitlines()[0]}" in run.output
    assert json.dumps(message) in run.output  # the whole message, in the task's result
    assert message.startswith(f"{campaign_file}: ")


@pytest.mark.parametrize(
    "missing", ["absent.yml", "no/such/dir/campaign.yml", "$(touch pwned); x.yml"]
)
def test_a_campaign_file_that_does_not_exist_fails_naming_it(tmp_path: Path, missing: str) -> None:
    run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, tmp_path / missing), tmp_path)

    assert_refused_before_any_host_task(run, tmp_path)
    assert f"{tmp_path / missing}: campaign file not found" in run.output
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()


def alias_bomb() -> str:
    """1 KB of YAML whose aliases expand to 9^9 strings (billion laughs)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return f"campaign_name: {CAMPAIGN}\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(
            alias_bomb().encode(),
            "line 7: more than 200000 values once its YAML aliases are expanded; refused",
            id="alias-bomb",
        ),
        pytest.param(
            b"campaign_name: caf\xe9\n",
            "line 1, column 19: not UTF-8 text (byte 0xe9); save the file as UTF-8",
            id="not-utf-8",
        ),
        pytest.param(
            b"campaign_name: x\nexecution:\n  cycles: " + b"9" * 5000 + b"\n",
            "line 3: a number of 5000 characters",
            id="integer-of-5000-digits",
        ),
    ],
)
def test_a_hostile_campaign_file_fails_on_the_controller_in_one_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """Refused by lem_plan with one line naming the file: no traceback, no host task."""
    campaign_file = tmp_path / "campaign.yml"
    campaign_file.write_bytes(content)

    run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, campaign_file), tmp_path)

    assert_refused_before_any_host_task(run, tmp_path)
    assert "Traceback" not in run.output and "MODULE FAILURE" not in run.output
    (failed,) = [line for line in run.output.splitlines() if "Module failed: " in line]
    message = failed.split("Module failed: ", 1)[1]
    assert message.startswith(f"{campaign_file}: {problem}") and len(message) < 300


@pytest.mark.docker
def test_jinja_and_shell_syntax_in_a_config_value_are_carried_as_data(
    tmp_path: Path, docker_engine: DockerClient
) -> None:
    """A model directory named with Jinja and shell syntax: loaded as it is, nothing run.

    Ansible templates strings it trusts; a value from the campaign file must never be
    one of them, on the controller (plan, filters, loops, callback) or on the host.
    """
    marker = f"lem-pwned-{uuid.uuid4().hex[:8]}"
    hostile = (
        f"{{{{ lookup('ansible.builtin.pipe', 'touch {marker}') }}}}"
        f"$(touch {marker}); `touch {marker}` {{% if true %}}x{{% endif %}}"
    )
    host = host_dirs(tmp_path)
    host.models.mkdir()
    (host.models / hostile).symlink_to("tiny")  # lem_services makes models/tiny
    campaign = with_config(model={"path": f"/models/{hostile}"})
    campaign["execution"]["cycles"] = 1
    campaign_file = write_yaml(tmp_path / "campaign.yml", campaign)
    try:
        run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, campaign_file), tmp_path)
    finally:
        compose_down(host.project)

    assert run.returncode == 0, run.output[-4000:]
    (entry,) = manifest_entries(host.manifest(CAMPAIGN)).values()
    assert entry["status"] == "completed"
    given = host.root / "state" / CAMPAIGN / "configs" / f"{entry['exp_id']}.json"
    assert json.loads(given.read_text(encoding="utf-8"))["model"]["path"] == f"/models/{hostile}"
    touched = [*REPO.glob(f"{marker}*"), *tmp_path.rglob(f"{marker}*"), *Path("/tmp").glob(marker)]
    assert touched == []
