"""The lem_campaign aggregate callback, enabled in a real ansible-playbook run."""

from __future__ import annotations

import json
import statistics
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.ansible import REPO, PlaybookRun, localhost_play, run_playbook
from fixtures.results import make_result, write_result
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.config.loader import load_campaign
from llenergymeasure.controller.plan import PlannedExperiment, build_plan
from llenergymeasure.host.manifest import Manifest, ManifestEntry, save_manifest

CAMPAIGN = "cbtest"
CONFIGS = [
    {"config_name": name, "backend": "pytorch", "model": {"path": "/models/tiny"}}
    for name in ("a", "b")
]
# Energy of each completed experiment; b's third cycle has not run yet.
ENERGY_J = {("a", 1): 400.0, ("a", 2): 410.0, ("a", 3): 420.0, ("b", 1): 300.0, ("b", 2): 330.0}


class Campaign:
    """A 2-config, 3-cycle campaign on localhost, five of its six experiments completed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "campaign.yml"
        campaign = {"campaign_name": CAMPAIGN, "configs": CONFIGS, "execution": {"cycles": 3}}
        self.file.write_text(yaml.safe_dump(campaign), encoding="utf-8")
        self.experiments = build_plan(load_campaign(self.file), ["localhost"]).experiments
        self.state_dir = root / "state"
        self.results_dir = root / "results" / CAMPAIGN
        self._complete_earlier_runs()

    def _complete_earlier_runs(self) -> None:
        entries = {}
        for experiment in self.experiments:
            energy = ENERGY_J.get((experiment.config_name, experiment.cycle))
            if energy is None:
                continue
            result = make_result(
                experiment.config_name,
                experiment.cycle,
                campaign_name=CAMPAIGN,
                config_hash=experiment.config_hash,
                energy_j=energy,
            )
            write_result(self.state_dir / "results", result)
            entries[experiment.exp_id] = completed_entry(experiment)
        self.state_dir.mkdir(exist_ok=True)
        manifest = Manifest(campaign_name=CAMPAIGN, host="localhost", entries=entries)
        save_manifest(self.state_dir / "manifest.json", manifest)

    def experiment(self, config_name: str, cycle: int) -> PlannedExperiment:
        return next(e for e in self.experiments if (e.config_name, e.cycle) == (config_name, cycle))

    def plays(self, extra_tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Plan, read the manifest, then `extra_tasks`: what the campaign playbook does."""
        tasks = [
            {
                "name": "plan",
                "lem_plan": {
                    "campaign_file": str(self.file),
                    "hosts": ["localhost"],
                    "plan_file": str(self.results_dir / "plan.json"),
                },
                "register": "planned",
            },
            {
                "name": "what is left",
                "lem_manifest": {
                    "state_dir": str(self.state_dir),
                    "campaign_name": CAMPAIGN,
                    "host": "localhost",
                    "experiments": "{{ planned.plan | lem_host_share('localhost') }}",
                },
            },
            *extra_tasks,
            {
                "name": "bring the results",
                "ansible.builtin.include_role": {"name": "lem_host", "tasks_from": "results"},
                "vars": {
                    "lem_host_state_dir": str(self.state_dir),
                    "lem_host_results_dest": str(self.results_dir / "hosts" / "localhost"),
                },
            },
        ]
        return [localhost_play(tasks)]

    def run(
        self,
        *options: str,
        extra_tasks: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
    ) -> PlaybookRun:
        return run_playbook(
            self.root,
            self.plays(extra_tasks or []),
            options=options,
            json_output=False,
            callback=True,
            env={"ANSIBLE_ROLES_PATH": str(REPO / "roles"), **(env or {})},
        )


def completed_entry(experiment: PlannedExperiment) -> ManifestEntry:
    return ManifestEntry(
        exp_id=experiment.exp_id,
        config_name=experiment.config_name,
        config_hash=experiment.config_hash,
        backend="pytorch",
        service="pytorch",
        cycle=experiment.cycle,
        status="completed",
        attempts=1,
        result_path=f"results/{experiment.exp_id}/result.json",
    )


def skip_task(campaign: Campaign, experiment: PlannedExperiment) -> dict[str, Any]:
    """A lem_experiment task for an experiment completed before: nothing runs."""
    return {
        "name": "run a",
        "lem_experiment": {
            "exp_id": experiment.exp_id,
            "campaign_name": CAMPAIGN,
            "host": "localhost",
            "config_name": experiment.config_name,
            "cycle": experiment.cycle,
            "backend": "pytorch",
            "config": experiment.config.model_dump(mode="json"),
            "config_hash": experiment.config_hash,
            "state_dir": str(campaign.state_dir),
            "project_name": "unused",
            "compose_files": [str(campaign.root / "absent.yml")],
            "service": "pytorch",
        },
    }


def row(summary: dict[str, Any], config_name: str) -> dict[str, Any]:
    return next(r for r in summary["rows"] if r["config_name"] == config_name)


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    return Campaign(tmp_path)


def test_summary_written_from_completed_results_and_progress_printed(campaign: Campaign) -> None:
    run = campaign.run(extra_tasks=[skip_task(campaign, campaign.experiment("a", 1))])

    assert run.returncode == 0, run.stdout + run.stderr
    # What it prints: the host's state, one progress line, the summary table and counts.
    assert "lem: host=localhost 5 completed before, 1 to run, 0 failed (kept)" in run.stdout
    # make_result: 640 output tokens over an 8 s window.
    assert "[5/6] cfg=a cycle=1 host=localhost 400 J 80 tok/s (completed before)" in run.stdout
    assert "LLenergyMeasure summary" in run.stdout
    assert "lem: campaign cbtest: 5 completed, 0 failed, 1 not run" in run.stdout
    assert f"lem: wrote {campaign.results_dir / 'summary.json'}" in run.stdout
    # What it writes.
    summary = json.loads((campaign.results_dir / "summary.json").read_text())
    assert {r["config_name"]: r["n"] for r in summary["rows"]} == {"a": 3, "b": 2}
    a_energy = row(summary, "a")["metrics"]["energy_j"]
    assert a_energy["mean"] == pytest.approx(statistics.mean([400.0, 410.0, 420.0]))
    assert a_energy["ci_lower"] <= a_energy["mean"] <= a_energy["ci_upper"]
    assert row(summary, "b")["metrics"]["energy_j"]["mean"] == pytest.approx(315.0)
    csv_lines = (campaign.results_dir / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("config_name,config_hash,backend,hardware,metric")
    assert "| a |" in (campaign.results_dir / "summary.md").read_text()
    stored = sorted(p.parent.name for p in campaign.results_dir.glob("hosts/localhost/*/*.json"))
    assert stored == sorted(f"{CAMPAIGN}__{c}__c{n:02d}" for c, n in ENERGY_J)
    # relative to the results folder, which may move to another machine
    assert summary["sources"] == sorted(f"hosts/localhost/{name}/result.json" for name in stored)


def test_the_callback_and_lem_aggregate_write_the_same_summary(
    campaign: Campaign, tmp_path: Path
) -> None:
    run = campaign.run(env={"LEM_BASELINE": "a"})
    assert run.returncode == 0, run.stdout + run.stderr
    by_callback = (campaign.results_dir / "summary.json").read_text()
    assert (
        "no outcome on the controller yet" in by_callback
    )  # b cycle 3: the plan's notes are in both

    out = tmp_path / "by-aggregate"
    args = ["aggregate", str(campaign.results_dir), "--out", str(out), "--baseline", "a"]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    assert (out / "summary.json").read_text() == by_callback


def test_baseline_adds_paired_ratios_and_the_report_is_written(campaign: Campaign) -> None:
    run = campaign.run(env={"LEM_BASELINE": "a"})

    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((campaign.results_dir / "summary.json").read_text())
    assert summary["baseline"] == "a"
    energy = next(c for c in summary["comparisons"] if c["metric"] == "energy_j")
    # b over a on the cycles both ran (1, 2): (300 + 330) / (400 + 410)
    assert (energy["config_name"], energy["cycles"]) == ("b", [1, 2])
    assert energy["ratio"]["mean"] == pytest.approx(630.0 / 810.0)
    assert (campaign.results_dir / "comparison.csv").read_text().startswith("config_name,")
    assert "Paired ratios to baseline a" in run.stdout
    page = (campaign.results_dir / "report.html").read_text()
    assert "Paired ratios to baseline a" in page and "data:image/png;base64," in page
    assert f"lem: wrote {campaign.results_dir / 'report.html'}" in run.stdout


def test_second_run_rewrites_nothing_that_is_the_same(campaign: Campaign) -> None:
    campaign.run()
    stored = sorted(campaign.results_dir.glob("hosts/localhost/*/result.json"))
    first = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in stored}
    summary = (campaign.results_dir / "summary.json").read_bytes()

    again = campaign.run()

    assert again.returncode == 0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in stored} == first
    assert (campaign.results_dir / "summary.json").read_bytes() == summary


def test_check_mode_prints_but_writes_nothing(campaign: Campaign) -> None:
    run = campaign.run("--check")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "lem: campaign cbtest: 5 completed, 0 failed, 1 not run" in run.stdout
    assert "lem: check mode: summary not written" in run.stdout
    assert not campaign.results_dir.exists()


def test_a_summary_that_cannot_be_written_warns_and_the_play_succeeds(
    campaign: Campaign,
) -> None:
    (campaign.results_dir / "summary.json").mkdir(parents=True)  # in the way of the file

    run = campaign.run()

    assert run.returncode == 0, run.stdout + run.stderr
    output = " ".join((run.stdout + run.stderr).split())  # warnings wrap long lines
    assert "lem_campaign: summary not written" in output
    assert "summary.json" in output


def test_a_playbook_without_campaign_modules_is_left_alone(tmp_path: Path) -> None:
    play = localhost_play([{"name": "unrelated", "ansible.builtin.debug": {"msg": "hello"}}])

    run = run_playbook(tmp_path, [play], json_output=False, callback=True)

    assert run.returncode == 0
    assert "lem:" not in run.stdout and "lem_campaign" not in run.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.docker
def test_a_failed_experiment_prints_a_failed_line(campaign: Campaign) -> None:
    """The base image has no `lem`: the exec fails, the callback reports it."""
    compose_file = campaign.root / "compose.yml"
    services = {"pytorch": {"image": "lem-base:bookworm", "command": ["sleep", "infinity"]}}
    compose_file.write_text(yaml.safe_dump({"services": services}), encoding="utf-8")
    project = f"lem-cbtest-{uuid.uuid4().hex[:8]}"
    task = skip_task(campaign, campaign.experiment("b", 3))
    task["lem_experiment"] |= {
        "compose_files": [str(compose_file)],
        "project_name": project,
        # no `lem` in the service: its health check could never pass, nor a restart help
        "health_check_after_failure": False,
    }
    task["ignore_errors"] = True
    compose = ["docker", "compose", "-f", str(compose_file), "-p", project]
    subprocess.run([*compose, "up", "--detach", "--wait"], check=True, capture_output=True)
    try:
        run = campaign.run(extra_tasks=[task])
    finally:
        subprocess.run([*compose, "down", "--timeout", "1"], capture_output=True)

    failed_line = next(line for line in run.stdout.splitlines() if "FAILED:" in line)
    assert failed_line.startswith("[6/6] cfg=b cycle=3 host=localhost FAILED: ")
    assert "lem: campaign cbtest: 5 completed, 1 failed, 0 not run" in run.stdout
