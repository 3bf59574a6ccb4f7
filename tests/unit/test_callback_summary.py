"""The lem_campaign callback's summary (issue 10, item 5), driven in process.

The callback is fed the module returns ansible-playbook would give it (a lem_plan,
lem_experiment and lem_manifest result each), with the result files on the results tree
as the playbook fetches them, then the summary play starts: a malformed result file is
named in the summary's load_errors and left out, the rest is summarised;
a summary that cannot be written gives its reason in the play's variables, on which
playbooks/campaign.yml's summary play fails. The real playbook path is in
tests/integration/test_faults_summary.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ansible.plugins.loader import callback_loader
from fixtures.results import exp_id_for, make_result

REPO = Path(__file__).resolve().parents[2]

CAMPAIGN = "cbsum"


def load_callback_module() -> Any:
    """The plugin as ansible-playbook loads it (with its options' definitions)."""
    callback_loader.add_directory(str(REPO / "callback_plugins"))
    plugin = callback_loader.get("lem_campaign")
    assert plugin is not None
    return sys.modules[type(plugin).__module__]


callback_module = load_callback_module()


def new_callback() -> Any:
    callback = callback_loader.get("lem_campaign")
    callback.set_options()
    return callback


def task_result(module: str, data: dict[str, Any], host: str = "localhost") -> Any:
    """What a callback receives for one task result (the parts it reads)."""
    return SimpleNamespace(
        task=SimpleNamespace(resolved_action=f"ansible.legacy.{module}", action=module),
        result=data,
        host=SimpleNamespace(get_name=lambda: host),
    )


def experiment_return(cycle: int) -> dict[str, Any]:
    """lem_experiment's compact record: no result content."""
    return {
        "changed": True,
        "status": "completed",
        "exp_id": exp_id_for(CAMPAIGN, "a", cycle),
        "config_name": "a",
        "cycle": cycle,
        "metrics": {"energy_j": 400.0},
        "result_path": f"results/{exp_id_for(CAMPAIGN, 'a', cycle)}/result.json",
    }


def valid_result(cycle: int) -> dict[str, Any]:
    return make_result("a", cycle, campaign_name=CAMPAIGN, energy_j=400.0 + cycle).model_dump(
        mode="json"
    )


@pytest.fixture
def fed(tmp_path: Path) -> tuple[Any, Path]:
    """A callback that has seen the plan and three experiments, the second malformed."""
    callback = new_callback()
    plan_file = tmp_path / "results" / CAMPAIGN / "plan.json"
    experiments = [{"exp_id": exp_id_for(CAMPAIGN, "a", c), "host": "localhost"} for c in (1, 2, 3)]
    callback.v2_runner_on_ok(
        task_result(
            "lem_plan",
            {
                "campaign_name": CAMPAIGN,
                "total": 3,
                "plan_file": str(plan_file),
                "plan": {"experiments": experiments},
            },
        )
    )
    broken = valid_result(2)
    broken["energy"] = "a lot"
    for cycle, result in ((1, valid_result(1)), (2, broken), (3, valid_result(3))):
        path = plan_file.parent / "hosts" / "localhost" / exp_id_for(CAMPAIGN, "a", cycle)
        path.mkdir(parents=True)
        (path / "result.json").write_text(json.dumps(result), encoding="utf-8")
        callback.v2_runner_on_ok(task_result("lem_experiment", experiment_return(cycle)))
    return callback, plan_file.parent


def summary_play() -> Any:
    return SimpleNamespace(vars={callback_module.SUMMARY_PLAY_VAR: True})


def test_a_malformed_result_file_is_named_and_left_out(fed: tuple[Any, Path]) -> None:
    callback, campaign_dir = fed
    play = summary_play()

    callback.v2_playbook_on_play_start(play)

    assert callback_module.SUMMARY_ERROR_VAR not in play.vars
    summary = json.loads((campaign_dir / "summary.json").read_text(encoding="utf-8"))
    (row,) = summary["rows"]
    assert row["n"] == 2  # cycles 1 and 3
    broken = campaign_dir / "hosts" / "localhost" / exp_id_for(CAMPAIGN, "a", 2) / "result.json"
    (error,) = summary["load_errors"]
    assert error.startswith(f"{broken}: not a valid result: energy: ")
    assert summary["sources"] == [
        f"hosts/localhost/{exp_id_for(CAMPAIGN, 'a', c)}/result.json" for c in (1, 3)
    ]


def test_a_module_return_the_callback_cannot_read_is_named_in_a_warning(
    fed: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    callback, _ = fed
    warned: list[str] = []
    monkeypatch.setattr(callback._display, "warning", warned.append)

    callback.v2_runner_on_ok(task_result("lem_manifest", {"completed": [{"exp_id": "x"}]}))

    assert len(warned) == 1
    assert warned[0].startswith(
        "lem_campaign: a lem_manifest result of host localhost is malformed, left out: "
    )


def test_a_summary_that_cannot_be_written_gives_the_summary_play_its_reason(
    fed: tuple[Any, Path],
) -> None:
    callback, campaign_dir = fed
    (campaign_dir / "summary.json").mkdir(parents=True)  # in the way of the file
    play = summary_play()

    callback.v2_playbook_on_play_start(play)

    error = play.vars[callback_module.SUMMARY_ERROR_VAR]
    assert error.startswith("summary not written: ") and "summary.json" in error


def test_only_the_summary_play_writes_the_summary_and_only_once(fed: tuple[Any, Path]) -> None:
    callback, campaign_dir = fed
    callback.v2_playbook_on_play_start(SimpleNamespace(vars={}))
    assert not (campaign_dir / "summary.json").exists()

    callback.v2_playbook_on_play_start(summary_play())
    written = (campaign_dir / "summary.json").stat().st_mtime_ns
    callback.v2_playbook_on_stats(SimpleNamespace())

    assert (campaign_dir / "summary.json").stat().st_mtime_ns == written


def test_a_server_mode_tree_gets_the_same_summary_from_the_callback_and_lem_aggregate(
    tmp_path: Path,
) -> None:
    # issue 19: one function for both; the server metrics and the cheapest-config table too
    from fixtures.results import write_server_campaign
    from typer.testing import CliRunner

    from llenergymeasure.cli import app

    campaign_dir = tmp_path / "results" / "serve"
    written = write_server_campaign(campaign_dir / "hosts" / "localhost", cycles=3)
    experiments = [{"exp_id": path.parent.name, "host": "localhost"} for path in written]
    callback = new_callback()
    plan = {"experiments": experiments}
    callback.v2_runner_on_ok(
        task_result(
            "lem_plan",
            {
                "campaign_name": "serve",
                "total": len(experiments),
                "plan_file": str(campaign_dir / "plan.json"),
                "plan": plan,
            },
        )
    )
    callback.v2_playbook_on_play_start(summary_play())
    out = tmp_path / "by-cli"
    cli = CliRunner().invoke(app, ["aggregate", str(campaign_dir), "--out", str(out)])
    assert cli.exit_code == 0, cli.output

    by_callback = json.loads((campaign_dir / "summary.json").read_text())
    assert by_callback == json.loads((out / "summary.json").read_text())
    assert "ttft_p90_s" in by_callback["metrics"] and by_callback["cheapest"]
    assert (campaign_dir / "summary.md").read_text() == (out / "summary.md").read_text()
