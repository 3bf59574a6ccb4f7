"""`lem run` and `run_campaign`: the playbook through ansible-runner, progress, log, summary.

The project is a copy of this one's layout whose playbooks/campaign.yml holds the
callback test's plays (plan, manifest, one experiment completed before: no Docker), so
the real ansible-runner, ansible-playbook, modules and lem_campaign callback all run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_callback import Campaign, skip_task
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.commands.drive import Progress, run_campaign

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Campaign]:
    campaign = Campaign(tmp_path)
    root = tmp_path / "project"
    (root / "playbooks").mkdir(parents=True)
    plays = campaign.plays([skip_task(campaign, campaign.experiment("a", 1))])
    (root / "playbooks" / "campaign.yml").write_text(yaml.safe_dump(plays), encoding="utf-8")
    (root / "callback_plugins").symlink_to(REPO / "callback_plugins")
    (root / "ansible.cfg").write_text(
        "[defaults]\n"
        f"library = {REPO / 'library'}\n"
        f"filter_plugins = {REPO / 'filter_plugins'}\n"
        f"roles_path = {REPO / 'roles'}\n"
        "callbacks_enabled = lem_campaign\n"
        "retry_files_enabled = False\n"
    )
    (root / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n")
    return root, campaign


def test_run_campaign_returns_the_summary_and_keeps_the_log(project: tuple[Path, Campaign]) -> None:
    root, campaign = project
    seen: list[Progress] = []
    run = run_campaign(
        campaign.file,
        root / "inventory.yml",
        {"lem_results_dir": str(campaign.root / "results")},
        project_dir=root,
        on_progress=seen.append,
    )
    assert (run.rc, run.status) == (0, "successful")
    assert run.campaign_dir == campaign.results_dir
    assert run.summary is not None
    assert {r.config_name: r.n for r in run.summary.rows} == {"a": 3, "b": 2}
    assert seen[0] == Progress(total=6, done=0)
    # five settled before this run (the manifest), b cycle 3 never runs: as the callback counts
    assert seen[-1].done == 5 and seen[-1].line is not None
    assert seen[-1].line.startswith("[5/6] cfg=a cycle=1 host=localhost 400 J ")
    assert seen[-1].line.endswith(" tok/s (completed before)")
    log = run.log.read_text()
    assert run.log.parent == campaign.results_dir / "logs"
    assert "TASK [plan]" in log and "LLenergyMeasure summary" in log and "PLAY RECAP" in log


def test_lem_run_prints_progress_and_summary_and_exits_with_the_playbooks_status(
    project: tuple[Path, Campaign],
) -> None:
    root, campaign = project
    args = ["run", str(campaign.file), "-i", str(root / "inventory.yml"), "--project", str(root)]
    result = CliRunner().invoke(app, [*args, "-e", f"lem_results_dir={campaign.root / 'results'}"])
    assert result.exit_code == 0, result.output
    assert "[5/6] cfg=a cycle=1 host=localhost 400 J" in result.stdout
    assert "LLenergyMeasure summary" in result.stdout
    assert f"log: {campaign.results_dir / 'logs'}" in result.stdout

    (root / "playbooks" / "campaign.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [{"ansible.builtin.fail": {"msg": "stop"}}],
                }
            ]
        )
    )
    failed = CliRunner().invoke(app, [*args, "-e", f"lem_results_dir={campaign.root / 'r2'}"])
    assert failed.exit_code == 2
    assert "the campaign playbook ended failed (exit 2)" in failed.stderr
    bad = CliRunner().invoke(app, [*args, "-e", "novalue"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.stderr
