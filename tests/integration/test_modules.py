"""The Ansible modules lem_plan, lem_manifest and lem_experiment, run by real ansible-playbook.

Tests marked `docker` run a real compose service; the others need only Ansible (and the
Docker CLI's compose plugin to read compose files).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.ansible import PlaybookRun, localhost_play, run_playbook
from fixtures.compose import cpu_host_variables, render_compose
from fixtures.plan import experiment_args, manifest_entry
from fixtures.results import make_result, write_result

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.controller.plan import PlannedExperiment, build_plan
from llenergymeasure.errors import ConfigError
from llenergymeasure.host.manifest import Manifest, ManifestEntry, save_manifest

CAMPAIGN = "itest"
TINY_CONFIG: dict[str, Any] = {
    "backend": "pytorch",
    "model": {"path": "/models/tiny"},
    "decoder": {"max_new_tokens": 4},
    "dataset": {"name": "builtin:short-prompts", "num_prompts": 2},
    "measurement": {"warmup_prompts": 1, "min_window_seconds": 0.0, "baseline_seconds": 0.0},
}


def write_campaign(directory: Path, configs: list[dict[str, Any]], cycles: int = 2) -> Path:
    path = directory / "campaign.yml"
    campaign = {"campaign_name": CAMPAIGN, "configs": configs, "execution": {"cycles": cycles}}
    path.write_text(yaml.safe_dump(campaign), encoding="utf-8")
    return path


def tiny(config_name: str, **changes: Any) -> dict[str, Any]:
    return {"config_name": config_name, **TINY_CONFIG, **changes}


@pytest.fixture
def share(tmp_path: Path) -> list[PlannedExperiment]:
    """localhost's share of a 2-config, 2-cycle plan (interleaved: a1 b1 a2 b2)."""
    campaign = write_campaign(tmp_path, [tiny("a"), tiny("b")])
    return build_plan(load_campaign(campaign), ["localhost"]).experiments


def plan_entry(experiment: PlannedExperiment) -> dict[str, Any]:
    return experiment.model_dump(mode="json")


def store_result(state_dir: Path, experiment: PlannedExperiment, energy_j: float) -> Path:
    result = make_result(
        experiment.config_name,
        experiment.cycle,
        campaign_name=CAMPAIGN,
        config_hash=experiment.config_hash,
        energy_j=energy_j,
    )
    return write_result(state_dir / "results", result)


def save_entries(state_dir: Path, *entries: ManifestEntry) -> None:
    """Write localhost's manifest holding `entries`, as earlier runs would have left it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        campaign_name=CAMPAIGN, host="localhost", entries={e.exp_id: e for e in entries}
    )
    save_manifest(state_dir / "manifest.json", manifest)


def run_task(
    workdir: Path, module: str, args: dict[str, Any], *options: str, interpreter: str | None = None
) -> tuple[PlaybookRun, dict[str, Any]]:
    """Run one task of `module` with `args`; the run and the task's result."""
    task = {"name": "under test", module: args}
    run = run_playbook(workdir, [localhost_play([task], interpreter)], options=options)
    return run, run.task_result("under test")


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its content, to show that nothing changed."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


# -- lem_plan ---------------------------------------------------------------------------


def test_plan_writes_then_reuses_the_plan(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, [tiny("a"), tiny("b")])
    plan_file = tmp_path / "results" / CAMPAIGN / "plan.json"
    args = {"campaign_file": str(campaign), "hosts": ["localhost"], "plan_file": str(plan_file)}

    _, first = run_task(tmp_path, "lem_plan", args)
    written = plan_file.read_bytes()
    _, second = run_task(tmp_path, "lem_plan", args)

    assert first["changed"] is True and first["status"] == "new"
    assert (first["campaign_name"], first["total"]) == (CAMPAIGN, 4)
    assert json.loads(written) == first["plan"]
    assert [e["exp_id"] for e in first["plan"]["experiments"]] == [
        "itest__a__c01",
        "itest__b__c01",
        "itest__a__c02",
        "itest__b__c02",
    ]
    assert second["changed"] is False and second["status"] == "reused"
    assert plan_file.read_bytes() == written


def test_plan_reports_a_changed_config(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    args = {"hosts": ["localhost"], "plan_file": str(plan_file)}
    campaign = write_campaign(tmp_path, [tiny("a"), tiny("b")])
    run_task(tmp_path, "lem_plan", {**args, "campaign_file": str(campaign)})
    write_campaign(tmp_path, [tiny("a"), tiny("b", pytorch={"batch_size": 4})])

    _, result = run_task(tmp_path, "lem_plan", {**args, "campaign_file": str(campaign)})

    assert result["changed"] is True and result["status"] == "updated"
    assert "  configs changed (config hash differs): b" in result["report"]
    assert (tmp_path / "plan.1.json").is_file()


def test_plan_check_mode_builds_but_writes_nothing(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, [tiny("a")], cycles=3)
    plan_file = tmp_path / "results" / "plan.json"
    args = {"campaign_file": str(campaign), "hosts": ["localhost"], "plan_file": str(plan_file)}

    _, result = run_task(tmp_path, "lem_plan", args, "--check")

    assert result["changed"] is True and result["total"] == 3
    assert not (tmp_path / "results").exists()


def test_plan_rejects_a_bad_campaign_with_the_validate_message(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, [tiny("a", pytorch={"batch_sise": 2})])
    plan_file = tmp_path / "results" / "plan.json"
    with pytest.raises(ConfigError) as expected:
        load_campaign(campaign)
    args = {"campaign_file": str(campaign), "hosts": ["localhost"], "plan_file": str(plan_file)}

    run, result = run_task(tmp_path, "lem_plan", args)

    assert run.returncode != 0 and result["failed"] is True
    assert result["msg"] == str(expected.value)
    assert str(campaign) in result["msg"]
    assert "configs[0].pytorch.batch_sise" in result["msg"]
    assert "2" in result["msg"].split("batch_sise", 1)[1]
    assert not (tmp_path / "results").exists()


def test_plan_without_the_package_names_the_interpreter(tmp_path: Path) -> None:
    bare_python = shutil.which("python3", path="/usr/bin")
    if bare_python is None:
        pytest.fail("this test needs the system's /usr/bin/python3 (without llenergymeasure)")
    args = {"campaign_file": "x.yml", "hosts": ["localhost"], "plan_file": "plan.json"}

    _, result = run_task(tmp_path, "lem_plan", args, interpreter=bare_python)

    assert result["failed"] is True
    assert "llenergymeasure" in result["msg"] and bare_python in result["msg"]


# -- lem_manifest -----------------------------------------------------------------------


def test_manifest_splits_the_share_into_pending_and_completed(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1, b1, a2, b2 = share
    state_dir = tmp_path / "state"
    store_result(state_dir, a1, energy_j=400.0)
    done = {"status": "completed", "attempts": 1, "result_path": f"results/{a1.exp_id}/result.json"}
    save_entries(
        state_dir,
        manifest_entry(a1, **done),
        manifest_entry(b1, status="running", attempts=1),
        manifest_entry(a2, status="failed", attempts=2, error="out of memory"),
    )
    before = tree(state_dir)
    args = {
        "state_dir": str(state_dir),
        "campaign_name": CAMPAIGN,
        "host": "localhost",
        "experiments": [plan_entry(e) for e in share],
    }

    _, result = run_task(tmp_path, "lem_manifest", args)

    assert result["changed"] is False
    assert [(p["exp_id"], p["reason"]) for p in result["pending"]] == [
        (b1.exp_id, "interrupted"),
        (a2.exp_id, "failed-retry"),
        (b2.exp_id, "new"),
    ]
    assert result["pending"][0]["config"] == plan_entry(b1)["config"]
    (completed,) = result["completed"]
    assert completed["exp_id"] == a1.exp_id and completed["host"] == "localhost"
    assert completed["metrics"]["energy_j"] == 400.0
    assert "result" not in completed  # the result travels as a file, never in the return
    assert result["counts"] == {"total": 4, "completed": 1, "pending": 3, "failed": 0}
    assert tree(state_dir) == before


def test_manifest_keeps_failures_when_not_retrying(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1 = share[0]
    state_dir = tmp_path / "state"
    failed = manifest_entry(a1, status="failed", attempts=1, error="model path missing")
    save_entries(state_dir, failed)
    args = {
        "state_dir": str(state_dir),
        "campaign_name": CAMPAIGN,
        "host": "localhost",
        "experiments": [plan_entry(e) for e in share],
        "retry_failed": False,
    }

    _, result = run_task(tmp_path, "lem_manifest", args)

    assert result["failed_kept"] == [
        {
            "exp_id": a1.exp_id,
            "config_name": "a",
            "cycle": 1,
            "host": "localhost",
            "attempts": 1,
            "error": "model path missing",
        }
    ]
    assert a1.exp_id not in [p["exp_id"] for p in result["pending"]]
    assert result["counts"]["failed"] == 1


def test_manifest_runs_again_a_completed_experiment_whose_result_is_gone(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1 = share[0]
    state_dir = tmp_path / "state"
    done = manifest_entry(a1, status="completed", attempts=1, result_path="results/x/result.json")
    save_entries(state_dir, done)
    args = {
        "state_dir": str(state_dir),
        "campaign_name": CAMPAIGN,
        "host": "localhost",
        "experiments": [plan_entry(a1)],
    }

    _, result = run_task(tmp_path, "lem_manifest", args)

    (pending,) = result["pending"]
    assert pending["reason"] == "result-missing"
    assert str(state_dir / "results/x/result.json") in pending["detail"]
    assert result["completed"] == []


def test_manifest_that_does_not_parse_fails_naming_the_file(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    manifest = state_dir / "manifest.json"
    manifest.write_text('{"manifest_version": 1, "entries": {"itest__a__c0', encoding="utf-8")
    before = tree(state_dir)
    args = {
        "state_dir": str(state_dir),
        "campaign_name": CAMPAIGN,
        "host": "localhost",
        "experiments": [plan_entry(e) for e in share],
    }

    _, result = run_task(tmp_path, "lem_manifest", args)

    assert result["failed"] is True
    assert str(manifest) in result["msg"]
    assert tree(state_dir) == before


def test_manifest_refuses_another_hosts_share(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    args = {
        "state_dir": str(tmp_path / "state"),
        "campaign_name": CAMPAIGN,
        "host": "gpu-2",
        "experiments": [plan_entry(share[0])],
    }

    _, result = run_task(tmp_path, "lem_manifest", args)

    assert result["failed"] is True
    assert result["msg"] == "experiments[0].host: 'localhost' is not this host ('gpu-2')"


# -- lem_experiment without a running service -------------------------------------------


@pytest.fixture
def idle_compose(tmp_path: Path) -> Path:
    """A compose file with one service; nothing is started from it."""
    path = tmp_path / "compose.yml"
    services = {"pytorch": {"image": "lem-base:bookworm", "command": ["sleep", "infinity"]}}
    path.write_text(yaml.safe_dump({"services": services}), encoding="utf-8")
    return path


def test_experiment_check_mode_reports_and_writes_nothing(
    tmp_path: Path, share: list[PlannedExperiment], idle_compose: Path
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    args = experiment_args(
        share[0], CAMPAIGN, state_dir, idle_compose, f"lem-test-{uuid.uuid4().hex[:8]}"
    )

    _, result = run_task(tmp_path, "lem_experiment", args, "--check", "--diff")

    assert result["changed"] is True
    assert (result["status"], result["reason"], result["attempts"]) == ("pending", "new", 0)
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["status"] == "running"
    assert list(state_dir.iterdir()) == []


def test_experiment_completed_with_same_hash_is_not_run_again(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1 = share[0]
    state_dir = tmp_path / "state"
    store_result(state_dir, a1, energy_j=123.0)
    done = {"status": "completed", "attempts": 1, "result_path": f"results/{a1.exp_id}/result.json"}
    save_entries(state_dir, manifest_entry(a1, **done))
    before = tree(state_dir)
    # The compose file does not exist: the module cannot have executed anything.
    args = experiment_args(a1, CAMPAIGN, state_dir, tmp_path / "absent.yml", "lem-test-unused")

    _, result = run_task(tmp_path, "lem_experiment", args)

    assert result["changed"] is False
    assert (result["status"], result["reason"]) == ("completed", "completed")
    assert result["metrics"]["energy_j"] == 123.0
    assert result["result_path"] == f"results/{a1.exp_id}/result.json"
    assert "result" not in result  # a compact record: no result content, no samples
    assert tree(state_dir) == before


def test_experiment_failure_kept_by_policy_is_not_run_again(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1 = share[0]
    state_dir = tmp_path / "state"
    save_entries(state_dir, manifest_entry(a1, status="failed", attempts=3, error="out of memory"))
    before = tree(state_dir)
    args = experiment_args(
        a1, CAMPAIGN, state_dir, tmp_path / "absent.yml", "unused", retry_failed=False
    )

    _, result = run_task(tmp_path, "lem_experiment", args)

    assert result["changed"] is False and "failed" not in result
    assert (result["status"], result["reason"], result["attempts"]) == ("failed", "failed-kept", 3)
    assert result["error"] == "out of memory"
    assert tree(state_dir) == before


def test_experiment_unknown_service_fails_before_writing(
    tmp_path: Path, share: list[PlannedExperiment], idle_compose: Path
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    args = experiment_args(
        share[0], CAMPAIGN, state_dir, idle_compose, "lem-test-unused", service="vllm"
    )

    _, result = run_task(tmp_path, "lem_experiment", args)

    assert result["failed"] is True
    assert "'vllm'" in result["msg"] and str(idle_compose) in result["msg"]
    assert "services: pytorch" in result["msg"]
    assert list(state_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"config_hash": "0000000000000000"},
            "config_hash: '0000000000000000' does not match the config (expected ",
        ),
        ({"cycle": 2}, "exp_id: 'itest__a__c01' does not match the config (expected "),
        ({"campaign_name": "../etc"}, "campaign_name: '../etc' is not a safe name"),
        ({"timeout": 0}, "timeout: 0 is less than the minimum 1"),
        # The host does not validate the config again (the controller did, issue 17): a
        # config that is not the planned one is refused by its hash.
        ({"config": {"config_name": "a", "backend": "pytorch"}}, "config_hash: "),
    ],
)
def test_experiment_rejects_an_inconsistent_or_unsafe_identity(
    tmp_path: Path,
    share: list[PlannedExperiment],
    idle_compose: Path,
    overrides: dict[str, Any],
    message: str,
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    args = (
        experiment_args(share[0], CAMPAIGN, state_dir, idle_compose, "lem-test-unused") | overrides
    )

    _, result = run_task(tmp_path, "lem_experiment", args)

    assert result["failed"] is True
    assert result["msg"].startswith(message), result["msg"]
    assert list(state_dir.iterdir()) == []


# -- lem_experiment against a real compose service --------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, made locally by `lem model tiny` (no download)."""
    models = tmp_path_factory.mktemp("models")
    lem = Path(sys.executable).parent / "lem"
    subprocess.run([str(lem), "model", "tiny", "--out", str(models / "tiny")], check=True)
    return models


@dataclass
class Service:
    """The `pytorch` service of a compose project rendered from docker/compose.yml.j2."""

    compose_file: Path
    project: str
    state_dir: Path

    def compose(self, *args: str) -> list[str]:
        return ["docker", "compose", "-f", str(self.compose_file), "-p", self.project, *args]


@pytest.fixture
def service(tmp_path: Path, cpu_image: str, models_dir: Path) -> Iterator[Service]:
    """The service up and healthy, as lem_services brings it up; taken down afterwards."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    project = f"lem-test-{uuid.uuid4().hex[:8]}"
    compose_file = tmp_path / "compose.yml"
    variables = cpu_host_variables(project, cpu_image, state_dir, models_dir)
    compose_file.write_text(render_compose(variables), encoding="utf-8")
    running = Service(compose_file, project, state_dir)
    subprocess.run(running.compose("up", "--detach", "--wait"), check=True, capture_output=True)
    try:
        yield running
    finally:
        subprocess.run(running.compose("down", "--volumes", "--timeout", "5"), capture_output=True)


@pytest.mark.docker
def test_experiment_runs_once_then_is_skipped(
    tmp_path: Path, share: list[PlannedExperiment], service: Service
) -> None:
    state_dir = service.state_dir
    secret = f"hf_{uuid.uuid4().hex}"
    args = experiment_args(
        share[0],
        CAMPAIGN,
        state_dir,
        service.compose_file,
        service.project,
        environment={"HF_TOKEN": secret},
    )

    first_run, first = run_task(tmp_path, "lem_experiment", args, "--diff")
    after_first = tree(state_dir)
    second_run, second = run_task(tmp_path, "lem_experiment", args)

    assert first["changed"] is True, first
    assert (first["status"], first["reason"], first["attempts"]) == ("completed", "new", 1)
    stored = ExperimentResult.model_validate_json((state_dir / first["result_path"]).read_bytes())
    assert stored.identity.exp_id == share[0].exp_id and stored.tokens.output_tokens > 0
    assert set(first["metrics"]) >= {"energy_j", "output_tokens_per_s", "j_per_output_token"}
    assert first["diff"]["after"]["status"] == "completed"
    assert second["changed"] is False and second["reason"] == "completed"
    assert second["metrics"] == first["metrics"]
    assert tree(state_dir) == after_first
    for text in (first_run.stdout, second_run.stdout, *map(repr, after_first.values())):
        assert secret not in text


@pytest.mark.docker
def test_experiment_carries_shell_syntax_as_data(tmp_path: Path, service: Service) -> None:
    state_dir = service.state_dir
    hostile_path = "/models/$(touch /tmp/pwned); touch /tmp/pwned2 #"
    campaign = write_campaign(tmp_path, [tiny("evil", model={"path": hostile_path})], cycles=1)
    (evil,) = build_plan(load_campaign(campaign), ["localhost"]).experiments
    args = experiment_args(evil, CAMPAIGN, state_dir, service.compose_file, service.project)

    _, result = run_task(tmp_path, "lem_experiment", args)

    assert result["failed"] is True and result["status"] == "failed"
    assert result["rc"] != 0 and result["stderr_tail"]
    written = json.loads((state_dir / "configs" / f"{evil.exp_id}.json").read_text())
    assert written["model"]["path"] == hostile_path
    listing = subprocess.run(
        service.compose("exec", "-T", "pytorch", "ls", "/tmp"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "pwned" not in listing and "pwned2" not in listing
    assert not Path("/tmp/pwned").exists() and not Path("/tmp/pwned2").exists()


@pytest.mark.docker
def test_experiment_interrupted_runs_again_with_partial_output_set_aside(
    tmp_path: Path, share: list[PlannedExperiment], service: Service
) -> None:
    a1 = share[0]
    partial = service.state_dir / "results" / a1.exp_id / "partial.log"
    partial.parent.mkdir(parents=True)
    partial.write_text("killed mid-window", encoding="utf-8")
    save_entries(service.state_dir, manifest_entry(a1, status="running", attempts=1))
    args = experiment_args(a1, CAMPAIGN, service.state_dir, service.compose_file, service.project)

    _, result = run_task(tmp_path, "lem_experiment", args)

    assert (result["status"], result["reason"], result["attempts"]) == (
        "completed",
        "interrupted",
        2,
    )
    set_aside = service.state_dir / "results" / f"{a1.exp_id}.interrupted-1" / "partial.log"
    assert set_aside.read_text(encoding="utf-8") == "killed mid-window"
    assert sorted(p.name for p in (service.state_dir / "results" / a1.exp_id).iterdir()) == [
        "result.json"
    ]


@pytest.mark.docker
def test_experiment_past_its_timeout_is_stopped_and_recorded_failed(
    tmp_path: Path, service: Service
) -> None:
    slow = tiny("slow", measurement={"min_window_seconds": 600.0, "baseline_seconds": 0.0})
    campaign = write_campaign(tmp_path, [slow], cycles=1)
    (experiment,) = build_plan(load_campaign(campaign), ["localhost"]).experiments
    args = experiment_args(
        experiment,
        CAMPAIGN,
        service.state_dir,
        service.compose_file,
        service.project,
        timeout=2,
        cancel_grace=3.0,
    )

    _, result = run_task(tmp_path, "lem_experiment", args)

    # The worker answers the cancel but is inside a 600 s window (it stops between
    # stages): after the grace, the service is restarted and the work is really gone.
    error = (
        "timed out after 2 s: its worker did not stop it within 3 s; "
        f"service {args['service']!r} restarted"
    )
    assert result["failed"] is True and result["rc"] == 124
    assert result["msg"] == f"{experiment.exp_id}: {error}"
    assert result["service_restarts"] == 1
    manifest = json.loads((service.state_dir / "manifest.json").read_text())
    assert manifest["entries"][experiment.exp_id]["status"] == "failed"
    assert manifest["entries"][experiment.exp_id]["error"] == error
    status = subprocess.run(
        service.compose("exec", "-T", args["service"], "lem", "worker", "--status"),
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(status.stdout)
    assert (fresh["busy_with"], fresh["experiments"], fresh["failures"]) == (None, 0, 0)


def test_restart_check_mode_says_what_the_runs_budget_allows(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    # two of the run's three restarts made already on this host (by lem_experiment tasks)
    (state_dir / ".run-restarts.json").write_text('{"run_id": "run-1", "restarts": 2}\n')
    args = {
        "services": ["vllm", "tensorrt"],
        "state_dir": str(state_dir),
        "project_name": "lem-never-up",
        "compose_files": [str(tmp_path / "compose.yml")],
        "run_id": "run-1",
        "max_restarts": 3,
    }

    _, result = run_task(tmp_path, "lem_restart", args, "--check")

    assert (result["restarted"], result["left"], result["restarts_spent"]) == (
        ["vllm"],
        ["tensorrt"],
        2,
    )
    assert result["changed"] is True
    assert json.loads((state_dir / ".run-restarts.json").read_text())["restarts"] == 2
