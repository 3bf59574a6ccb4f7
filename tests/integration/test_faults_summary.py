"""A campaign summary that cannot be written fails the run (issue 10, item 5).

Real ansible-playbook with the lem_campaign callback: the plan and manifest tasks of
test_callback.py's campaign, then the summary play of playbooks/campaign.yml itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.ansible import run_playbook
from fixtures.campaign import REPO
from test_callback import Campaign

SUMMARY_PLAY_VAR = "lem_campaign_summary_play"


def campaign_summary_play() -> dict[str, Any]:
    """The summary play of playbooks/campaign.yml, as it is there."""
    plays = yaml.safe_load((REPO / "playbooks" / "campaign.yml").read_text(encoding="utf-8"))
    (play,) = [p for p in plays if p.get("vars", {}).get(SUMMARY_PLAY_VAR) is True]
    return play


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    return Campaign(tmp_path)


def run_with_summary_play(campaign: Campaign) -> Any:
    plays = [*campaign.plays([]), campaign_summary_play()]
    # The summary play's host play includes lem_host (results.yml): the repository's roles.
    return run_playbook(
        campaign.root,
        plays,
        json_output=False,
        callback=True,
        env={"ANSIBLE_ROLES_PATH": str(REPO / "roles")},
    )


def test_the_summary_play_writes_the_summary(campaign: Campaign) -> None:
    run = run_with_summary_play(campaign)

    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((campaign.results_dir / "summary.json").read_text(encoding="utf-8"))
    assert {r["config_name"]: r["n"] for r in summary["rows"]} == {"a": 3, "b": 2}
    assert "skipping: [localhost]" in run.stdout  # the check found no error


def test_a_summary_that_cannot_be_written_fails_the_run_with_the_reason(
    campaign: Campaign,
) -> None:
    (campaign.results_dir / "summary.json").mkdir(parents=True)  # in the way of the file

    run = run_with_summary_play(campaign)

    assert run.returncode != 0
    output = " ".join(run.stdout.split())
    assert "TASK [Fail when the summary could not be written]" in output
    assert f"summary not written: {campaign.results_dir}/" in output  # the file named
    assert "summary.json" in output and "Is a directory" in output
