"""The worker wired into the orchestration: model reuse, cold starts, restarts, thermal gaps.

Real ansible-playbook, real Docker, the CPU image whose services run `lem worker`. Loads
are counted twice: in the results (`timing.model_reused`) and by the worker itself
(`lem worker --status`). That a reused-model result and a fresh-process result share
the schema and plausible values is tested in tests/unit/test_worker.py
(test_reused_and_fresh_process_results_share_the_schema).

The restart a cold start may need (an engine that keeps its GPU memory: exit 75) cannot
happen on a CPU, so the module's restart path runs against a stand-in service whose `lem`
answers 75 to a cold start once it has served an experiment since it started.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.ansible import localhost_play, run_playbook
from fixtures.campaign import (
    HostDirs,
    compose_down,
    experiment_results,
    manifest_entries,
    read_json,
    run_campaign,
    tiny_campaign,
    unique_name,
    write_yaml,
)
from fixtures.faults import PreparedHost
from fixtures.plan import experiment_args
from fixtures.results import make_result, write_result
from python_on_whales import DockerClient

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.controller.plan import PlannedExperiment, build_plan
from llenergymeasure.runner.loadkey import load_key

pytestmark = pytest.mark.docker

CAMPAIGN = "wktest"


@pytest.fixture
def host(
    tmp_path: Path, prepared_host: PreparedHost, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    """The session's venv and models: a fresh install is not what these tests prove."""
    dirs = prepared_host.dirs(tmp_path / "host", "lem-wktest")
    yield dirs
    compose_down(dirs.project)


def run_kept_up(
    tmp_path: Path, host: HostDirs, campaign: dict[str, Any]
) -> tuple[list[dict], list[dict]]:
    """Run `campaign` leaving the services up; the results, and what lem_experiment
    returned for each (from `-v`), in plan order."""
    inventory = write_yaml(
        tmp_path / "inventory.yml",
        {
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                        "lem_services_tiny_model": True,
                    }
                }
            }
        },
    )
    variables = {
        **host.variables(),
        "lem_campaign_file": str(write_yaml(tmp_path / "campaign.yml", campaign)),
        "lem_results_dir": str(tmp_path / "results"),
        "lem_services_keep": True,
    }
    run = run_campaign(inventory, variables, tmp_path, options=["-v"])
    assert run.returncode == 0, run.output[-4000:]
    entries = manifest_entries(host.manifest(CAMPAIGN))
    assert {entry["status"] for entry in entries.values()} == {"completed"}
    plan = read_json(tmp_path / "results" / CAMPAIGN / "plan.json")["experiments"]
    state = host.root / "state" / CAMPAIGN
    returned = experiment_results(run.output)
    return (
        [read_json(state / entries[e["exp_id"]]["result_path"]) for e in plan],
        [returned[e["exp_id"]] for e in plan],
    )


def worker_stats(project: str) -> dict[str, Any]:
    status = subprocess.run(
        ["docker", "compose", "-p", project, "exec", "-T", "pytorch", "lem", "worker", "--status"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(status.stdout)


def key_changes(results: list[dict]) -> list[bool]:
    """For each result in run order: does it need a load (its load key differs from the last)?"""
    keys = [load_key(ExperimentConfig.model_validate(r["config"])) for r in results]
    return [i == 0 or key != keys[i - 1] for i, key in enumerate(keys)]


def test_a_model_loads_once_per_load_key_in_run_order_and_gaps_are_thermal(
    tmp_path: Path, host: HostDirs
) -> None:
    campaign = tiny_campaign(CAMPAIGN, batch_sizes=(1, 2), cycles=2)
    # bs1 and bs2 share a load key (batch size is a generation-time parameter);
    # eager attention is a load-time one: another key.
    eager = {**campaign["configs"][0], "config_name": "eager"}
    eager["pytorch"] = {"batch_size": 1, "attn_implementation": "eager"}
    campaign["configs"].append(eager)
    campaign["execution"] |= {
        "order": "interleaved",
        "gap_mode": "thermal",
        "config_gap_seconds": 1,
        "cycle_gap_seconds": 1,
    }

    results, returned = run_kept_up(tmp_path, host, campaign)

    loads = key_changes(results)
    assert loads == [True, False, True, True, False, True]  # bs1 bs2 eager, twice
    assert [not r["timing"]["model_reused"] for r in results] == loads
    methods = [r["timing"]["cold_start_method"] for r in results]
    assert methods == ["fresh_process", None, "unload", "unload", None, "unload"]
    for result, loaded in zip(results, loads, strict=True):
        assert (result["timing"]["load_seconds"] > 0) == loaded
    stats = worker_stats(host.project)
    assert (stats["loads"], stats["experiments"], stats["failures"]) == (4, 6, 0)
    # No GPU here: `lem wait-cool` ran in the service, said it cannot tell (no-gpu), and
    # the gap was waited as a fixed one; the first experiment has no gap.
    gaps = [r["gap"] for r in returned]
    assert gaps[0] == {"mode": "thermal", "outcome": "none", "waited_seconds": 0.0}, gaps
    assert {(g["mode"], g["outcome"]) for g in gaps[1:]} == {("thermal", "no-gpu")}, gaps
    assert all(g["waited_seconds"] >= 1.0 for g in gaps[1:]), gaps
    assert [r["timing"]["gap_waited_seconds"] for r in results] == [
        g["waited_seconds"] for g in gaps
    ]


def test_force_cold_start_loads_every_experiment_without_restarting_the_service(
    tmp_path: Path, host: HostDirs
) -> None:
    campaign = tiny_campaign(CAMPAIGN, batch_sizes=(1, 2), cycles=2)
    campaign["cold_start"] = {"force_cold_start": True}

    results, _ = run_kept_up(tmp_path, host, campaign)

    assert [r["timing"]["model_reused"] for r in results] == [False] * 4
    assert all(r["timing"]["load_seconds"] > 0 for r in results)
    # A worker that has loaded nothing yet was started for this load: "restart";
    # then the model is unloaded and loaded again in the same process: "unload".
    methods = [r["timing"]["cold_start_method"] for r in results]
    assert methods == ["restart", "unload", "unload", "unload"]
    stats = worker_stats(host.project)
    assert (stats["loads"], stats["experiments"]) == (4, 4)  # one worker served all four


# -- lem_experiment's restart when only a restart gives the cold start (exit 75) ----------

STAND_IN_LEM = r'''#!/usr/bin/env python3
"""Stand-in for `lem`: a worker whose engine never gives its memory back.

`lem worker` listens on the socket (so the service is healthy) under a new boot id;
`lem worker --status` answers once it listens; `lem experiment --cold-start` exits 75
once this boot has served an experiment, and otherwise copies the result the test
prepared to --out.
"""
import json, shutil, socket, sys, uuid
from pathlib import Path

RUN = Path("/run/lem")
STATE = Path("/lem/state")


def worker():
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "boot").write_text(uuid.uuid4().hex)
    with open(STATE / "stand-in-starts", "a") as starts:
        starts.write("started\n")
    path = RUN / "worker.sock"
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    while True:
        listener.accept()[0].close()


def status():
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(str(RUN / "worker.sock"))  # refused until the worker listens
    probe.close()
    print(json.dumps({"pid": 1, "started_at": "2026-01-01T00:00:00+00:00"}))


def experiment(argv):
    served = RUN / ("served-" + (RUN / "boot").read_text())
    if "--cold-start" in argv and served.exists():
        print("error: unloading did not release GPU memory: GPU 0: 70000 MiB used", file=sys.stderr)
        sys.exit(75)
    exp_id, out = argv[argv.index("--exp-id") + 1], Path(argv[argv.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(STATE / "prepared" / exp_id / "result.json", out / "result.json")
    served.touch()


if sys.argv[1:3] == ["worker", "--status"]:
    status()
elif sys.argv[1] == "worker":
    worker()
else:
    experiment(sys.argv)
'''


@dataclass(frozen=True)
class StandIn:
    """A compose service of the base image running the stand-in `lem`."""

    compose_file: Path
    project: str
    state_dir: Path

    def starts(self) -> int:
        return len((self.state_dir / "stand-in-starts").read_text().splitlines())


@pytest.fixture
def stand_in(tmp_path: Path, docker_engine: DockerClient) -> Iterator[StandIn]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    lem = tmp_path / "lem"
    lem.write_text(STAND_IN_LEM, encoding="utf-8")
    lem.chmod(0o755)
    service = {
        "image": "lem-base:bookworm",
        "command": ["lem", "worker"],
        "init": True,
        "volumes": [f"{state_dir}:/lem/state", f"{lem}:/usr/local/bin/lem:ro"],
        "healthcheck": {
            "test": ["CMD", "test", "-S", "/run/lem/worker.sock"],
            "interval": "1s",
            "start_period": "1s",
        },
    }
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(yaml.safe_dump({"services": {"pytorch": service}}), encoding="utf-8")
    running = StandIn(compose_file, unique_name("lem-standin"), state_dir)
    client = DockerClient(compose_files=[compose_file], compose_project_name=running.project)
    client.compose.up(detach=True, wait=True, quiet=True)
    try:
        yield running
    finally:
        compose_down(running.project)


def cold_start_args(experiment: PlannedExperiment, stand_in: StandIn, **extra: Any) -> dict:
    """lem_experiment's arguments for `experiment` with a cold start, result prepared."""
    result = make_result(
        experiment.config_name,
        experiment.cycle,
        campaign_name=CAMPAIGN,
        config_hash=experiment.config_hash,
    )
    write_result(stand_in.state_dir / "prepared", result)
    return experiment_args(
        experiment,
        CAMPAIGN,
        stand_in.state_dir,
        stand_in.compose_file,
        stand_in.project,
        cold_start=True,
        wait_timeout=120,
        **extra,
    )


def two_experiments(tmp_path: Path) -> list[PlannedExperiment]:
    campaign = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN, (1,), cycles=2))
    return build_plan(load_campaign(campaign), ["localhost"]).experiments


def run_experiments(tmp_path: Path, args: list[dict]) -> list[dict[str, Any]]:
    tasks = [
        {"name": f"experiment {i}", "lem_experiment": a, "ignore_errors": True}
        for i, a in enumerate(args)
    ]
    run = run_playbook(tmp_path, [localhost_play(tasks)])
    return [run.task_result(f"experiment {i}") for i in range(len(args))]


def test_a_cold_start_that_needs_a_restart_restarts_the_service_once(
    tmp_path: Path, stand_in: StandIn
) -> None:
    first, second = two_experiments(tmp_path)

    done = run_experiments(
        tmp_path, [cold_start_args(first, stand_in), cold_start_args(second, stand_in)]
    )

    assert [(r["status"], r["service_restarts"]) for r in done] == [
        ("completed", 0),
        ("completed", 1),
    ]
    assert stand_in.starts() == 2
    entries = manifest_entries(stand_in.state_dir / "manifest.json")
    assert [entries[e.exp_id]["attempts"] for e in (first, second)] == [1, 1]


def test_a_cold_start_without_a_restart_left_is_recorded_failed(
    tmp_path: Path, stand_in: StandIn
) -> None:
    first, second = two_experiments(tmp_path)
    args = [cold_start_args(first, stand_in), cold_start_args(second, stand_in)]
    args[1]["max_restarts"] = 0

    done = run_experiments(tmp_path, args)

    assert done[0]["status"] == "completed"
    assert (done[1]["status"], done[1]["rc"], done[1]["service_restarts"]) == ("failed", 75, 0)
    assert "no service restart left" in done[1]["error"]
    assert stand_in.starts() == 1
    entry = manifest_entries(stand_in.state_dir / "manifest.json")[second.exp_id]
    assert (entry["status"], entry["error"]) == ("failed", done[1]["error"])


# -- the compose services cache of lem_experiment ------------------------------------------


def test_the_services_cache_follows_a_changed_compose_file(tmp_path: Path) -> None:
    first, _ = two_experiments(tmp_path)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(yaml.safe_dump({"services": {"pytorch": {"image": "x"}}}))
    args = {
        "exp_id": first.exp_id,
        "campaign_name": CAMPAIGN,
        "host": first.host,
        "config_name": first.config_name,
        "cycle": first.cycle,
        "backend": first.backend,
        "config": first.config.model_dump(mode="json"),
        "config_hash": first.config_hash,
        "state_dir": str(state_dir),
        "project_name": unique_name("lem-cache"),  # never started: the exec fails
        "compose_files": [str(compose_file)],
        "service": "pytorch",
    }

    (not_running,) = run_experiments(tmp_path, [args])
    cached = read_json(state_dir / ".compose-services.json")
    recorded = read_json(state_dir / "manifest.json")
    compose_file.write_text(yaml.safe_dump({"services": {"vllm": {"image": "x"}}}))
    (gone,) = run_experiments(tmp_path, [args])

    assert not_running["status"] == "failed"  # the service was found, its exec failed
    assert cached["services"] == ["pytorch"]
    # Refused before the attempt started: the entry returned and the manifest as they were.
    assert gone["failed"] is True
    assert (gone["status"], gone["attempts"]) == ("failed", not_running["attempts"])
    assert read_json(state_dir / "manifest.json") == recorded
    assert "'pytorch' is not a service of" in gone["msg"] and "(services: vllm)" in gone["msg"]
