"""Hostile or wrong input to the campaign playbook (real ansible-playbook, inventory/local.yml).

A bad campaign fails in the controller play, on the task that validates it (lem_plan),
with the message `lem validate` gives; no host task runs and nothing is written: neither
the results directory nor the host's state root comes into being. Three inputs go through
the whole campaign playbook (a bad value, a hostile file, a missing file with shell syntax
in its name); every other input is given to lem_plan, the task that refuses them there, in
one ansible-playbook run with a task per input. The last test runs a whole campaign whose
model path is Jinja and shell syntax, to show that Ansible carries config values as data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.ansible import PlaybookRun, localhost_play, run_playbook
from fixtures.campaign import (
    REPO,
    CampaignRun,
    HostDirs,
    manifest_entries,
    run_campaign,
    tiny_campaign,
    unique_name,
    write_yaml,
)
from fixtures.shared_campaign import CAMPAIGN as SHARED
from fixtures.shared_campaign import ON_SHARED_CAMPAIGN, SharedCampaign
from fixtures.shared_campaign import exp_id as shared_exp_id

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


BAD_CAMPAIGNS = {
    "campaign-name-;": {**with_config(), "campaign_name": "x; touch pwned"},
    "campaign-name-..": {**with_config(), "campaign_name": "../escape"},
    "config-name-$()": with_config(config_name="$(touch pwned)"),
    "config-name-slash": with_config(config_name="a/b"),
    "config-name-newline": with_config(config_name="a\nb`id`"),
    "model-outside-mounts": with_config(model={"path": "/etc/passwd"}),
    "model-relative": with_config(model={"path": "../models/tiny"}),
    "wrong-type": with_config(decoder={"max_new_tokens": "8"}),
    # test_campaign_playbook.py's invalid campaign: a misspelt key
    "unknown-key": {**with_config(), "execution": {"cycels": 3}},
    "other-backend-section": with_config(vllm={"max_num_seqs": 8}),
    "grid-base-unknown-key": grid_campaign(
        {**TINY_CONFIG, "decoder": {"beams": 2}}, {"pytorch.batch_size": [1, 2]}
    ),
    "grid-of-10^12": grid_campaign(TINY_CONFIG, HUGE_VARY),
}


def alias_bomb() -> str:
    """1 KB of YAML whose aliases expand to 9^9 strings (billion laughs)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return f"campaign_name: {CAMPAIGN}\n" + "\n".join(lines) + "\n"


# file content -> the problem named after "<file>: "
HOSTILE_FILES = {
    "alias-bomb": (
        alias_bomb().encode(),
        "line 7: more than 200000 values once its YAML aliases are expanded; refused",
    ),
    "not-utf-8": (
        b"campaign_name: caf\xe9\n",
        "line 1, column 19: not UTF-8 text (byte 0xe9); save the file as UTF-8",
    ),
    "integer-of-5000-digits": (
        b"campaign_name: x\nexecution:\n  cycles: " + b"9" * 5000 + b"\n",
        "line 3: a number of 5000 characters",
    ),
}
MISSING_FILES = ["absent.yml", "no/such/dir/campaign.yml", "$(touch pwned); x.yml"]


@dataclass(frozen=True)
class PlanRefusals:
    """One ansible-playbook run with a lem_plan task per input, named after the input."""

    root: Path
    files: dict[str, Path]
    run: PlaybookRun

    def refusal(self, name: str) -> str:
        """The input's task failed, wrote nothing, and said this (its whole message)."""
        result = self.run.task_result(name)
        assert result.get("failed") is True, result
        assert not (self.root / "results" / name).exists()
        assert "Traceback" not in self.run.stdout and "MODULE FAILURE" not in self.run.stdout
        return str(result["msg"])


@pytest.fixture(scope="module")
def plan_refusals(tmp_path_factory: pytest.TempPathFactory) -> PlanRefusals:
    root = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {}
    for name, campaign in BAD_CAMPAIGNS.items():
        files[name] = write_yaml(root / f"bad-{len(files)}.yml", campaign)
    for name, (content, _) in HOSTILE_FILES.items():
        files[name] = root / f"hostile-{len(files)}.yml"
        files[name].write_bytes(content)
    for missing in MISSING_FILES:
        files[missing] = root / missing
    tasks = [
        {
            "name": name,
            "lem_plan": {
                "campaign_file": str(path),
                "hosts": ["localhost"],
                "results_dir": str(root / "results" / name),
            },
            "ignore_errors": True,
        }
        for name, path in files.items()
    ]
    return PlanRefusals(root, files, run_playbook(root, [localhost_play(tasks)]))


@pytest.mark.parametrize("name", list(BAD_CAMPAIGNS))
def test_a_bad_campaign_is_refused_with_the_validate_message(
    plan_refusals: PlanRefusals, name: str
) -> None:
    campaign_file = plan_refusals.files[name]
    with pytest.raises(ConfigError) as validate_error:
        load_campaign(campaign_file)
    message = str(validate_error.value)

    assert plan_refusals.refusal(name) == message
    assert message.startswith(f"{campaign_file}: ")


def test_a_misspelt_key_is_named_with_its_value(plan_refusals: PlanRefusals) -> None:
    campaign_file = plan_refusals.files["unknown-key"]

    assert f"{campaign_file}: execution.cycels: unknown key (value 3)" in plan_refusals.refusal(
        "unknown-key"
    )


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_a_hostile_campaign_file_is_refused_in_one_line(
    plan_refusals: PlanRefusals, name: str
) -> None:
    """One line naming the file: no traceback."""
    campaign_file = plan_refusals.files[name]
    message = plan_refusals.refusal(name)

    assert message.startswith(f"{campaign_file}: {HOSTILE_FILES[name][1]}")
    assert len(message) < 300 and "\n" not in message


@pytest.mark.parametrize("missing", MISSING_FILES)
def test_a_campaign_file_that_does_not_exist_is_refused_naming_it(
    plan_refusals: PlanRefusals, missing: str
) -> None:
    assert str(plan_refusals.files[missing]) in plan_refusals.refusal(missing)
    assert not (plan_refusals.root / "pwned").exists() and not (REPO / "pwned").exists()


# -- through the whole campaign playbook -----------------------------------------------


def test_a_bad_value_fails_the_campaign_on_the_controller_with_the_validate_message(
    tmp_path: Path,
) -> None:
    campaign_file = write_yaml(tmp_path / "campaign.yml", BAD_CAMPAIGNS["config-name-$()"])
    with pytest.raises(ConfigError) as validate_error:
        load_campaign(campaign_file)
    message = str(validate_error.value)

    run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, campaign_file), tmp_path)

    assert_refused_before_any_host_task(run, tmp_path)
    assert f"Module failed: {message.splitlines()[0]}" in run.output
    assert json.dumps(message) in run.output  # the whole message, in the task's result
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()


def test_a_hostile_campaign_file_fails_the_campaign_on_the_controller_in_one_line(
    tmp_path: Path,
) -> None:
    content, problem = HOSTILE_FILES["alias-bomb"]
    campaign_file = tmp_path / "campaign.yml"
    campaign_file.write_bytes(content)

    run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, campaign_file), tmp_path)

    assert_refused_before_any_host_task(run, tmp_path)
    assert "Traceback" not in run.output and "MODULE FAILURE" not in run.output
    (failed,) = [line for line in run.output.splitlines() if "Module failed: " in line]
    message = failed.split("Module failed: ", 1)[1]
    assert message.startswith(f"{campaign_file}: {problem}") and len(message) < 300


def test_a_missing_campaign_file_fails_the_campaign_naming_it(tmp_path: Path) -> None:
    """The playbook's own check, before lem_plan: shell syntax in the name runs nothing."""
    missing = tmp_path / MISSING_FILES[-1]

    run = run_campaign(LOCAL_INVENTORY, campaign_variables(tmp_path, missing), tmp_path)

    assert_refused_before_any_host_task(run, tmp_path)
    assert f"{missing}: campaign file not found" in run.output
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()


@ON_SHARED_CAMPAIGN
def test_jinja_and_shell_syntax_in_a_config_value_are_carried_as_data(
    shared_campaign: SharedCampaign,
) -> None:
    """A model directory named with Jinja and shell syntax: loaded as it is, nothing run.

    Ansible templates strings it trusts; a value from the campaign file must never be
    one of them, on the controller (plan, filters, loops, callback) or on the host. The
    session's shared campaign has such a config (`hostile`), run over two cycles.
    """
    shared = shared_campaign
    entries = manifest_entries(shared.host.manifest(SHARED))
    configs = shared.host.root / "state" / SHARED / "configs"

    for cycle in (1, 2):
        hostile_exp = shared_exp_id("hostile", cycle)
        assert entries[hostile_exp]["status"] == "completed", entries[hostile_exp]
        given = json.loads((configs / f"{hostile_exp}.json").read_text(encoding="utf-8"))
        assert given["model"]["path"] == f"/models/{shared.hostile}"
    marker = shared.marker
    touched = [
        *REPO.glob(f"{marker}*"),
        *shared.workdir.rglob(f"{marker}*"),
        *Path("/tmp").glob(marker),
    ]
    assert touched == []
