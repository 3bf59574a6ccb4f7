"""Per-experiment orchestration overhead: the worker against fresh processes and containers.

Overhead = wall time of one experiment's call minus the in-container time from the
model load to the result (`timing.total_seconds`, which includes the load when there
was one). Measured in one run, on localhost, with the CPU image and the tiny model,
for the same configs, at the level the lem_experiment module works:

  (a) `docker compose exec` (python-on-whales) of `lem experiment`, served by the
      service's `lem worker` (the model stays loaded between experiments);
  (a') the same exec as the module makes it (`DockerCompose.cli`): a `docker exec`
      into the service's running container, found by compose's labels;
  (b) the same exec with `--no-worker`: a fresh process imports torch and loads the model;
  (c) `docker compose run --rm` of `lem experiment` per experiment: a fresh container.

and (a) once more through the full campaign playbook (Ansible task, module, manifest
updates): there the overhead is the time between one experiment's result and the next
one's start, less the next one's model load. Prints the figures and the ratios; asserts
nothing.

    .venv/bin/python bench/bench_orchestration.py [--experiments 20] [--no-playbook]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_CACHE_DIR,
    SERVICE,
    Playbook,
    Service,
    cpu_image,
    describe,
    read_result,
    running_service,
    tiny_campaign,
    tiny_config,
    tiny_model,
)
from python_on_whales import DockerClient

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.dispatch.compose import DockerCompose

CONTAINER_STATE = "/lem/state"
WINDOW_SECONDS = 0.5  # short: the overhead does not depend on it, the bench's length does


def experiment_ids(count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` experiments alternating two configs that share one load key."""
    configs = [tiny_config("bs1", 1, WINDOW_SECONDS), tiny_config("bs2", 2, WINDOW_SECONDS)]
    chosen = [configs[i % 2] for i in range(count)]
    return [(f"bench__{c['config_name']}__e{i:03d}", c) for i, c in enumerate(chosen)]


def write_configs(service: Service, experiments: list[tuple[str, dict[str, Any]]]) -> None:
    configs = service.state_dir / "configs"
    configs.mkdir(exist_ok=True)
    for exp_id, config in experiments:
        resolved = ExperimentConfig.model_validate(config).model_dump_json()
        (configs / f"{exp_id}.json").write_text(resolved, encoding="utf-8")


def experiment_argv(exp_id: str, out_name: str, *extra: str) -> list[str]:
    return [
        "lem",
        "experiment",
        f"{CONTAINER_STATE}/configs/{exp_id}.json",
        "--out",
        f"{CONTAINER_STATE}/results/{out_name}",
        "--exp-id",
        exp_id,
        *extra,
    ]


Launcher = Callable[[DockerClient, list[str]], object]


def via_exec(docker: DockerClient, argv: list[str]) -> object:
    return docker.compose.execute(SERVICE, argv, tty=False)


def via_module_exec(service: Service) -> Launcher:
    compose = DockerCompose([str(service.compose_file)], service.project)

    def launch(_: DockerClient, argv: list[str]) -> object:
        done = compose.cli(["exec", "--no-TTY", SERVICE, *argv])
        if done.rc != 0:
            raise RuntimeError(f"exec failed ({done.rc}): {done.stderr[-500:]}")
        return done

    return launch


def via_run(docker: DockerClient, argv: list[str]) -> object:
    return docker.compose.run(SERVICE, argv, remove=True, tty=False, dependencies=False)


def measure(
    service: Service,
    experiments: list[tuple[str, dict[str, Any]]],
    mode: str,
    launch: Launcher,
    *extra: str,
) -> tuple[list[float], list[float]]:
    """(overheads, in-container seconds) of each experiment launched with `launch`."""
    docker = service.client()
    overheads, inside = [], []
    for exp_id, _ in experiments:
        out_name = f"{mode}-{exp_id}"
        started = time.perf_counter()
        launch(docker, experiment_argv(exp_id, out_name, *extra))
        wall = time.perf_counter() - started
        timing = read_result(service.state_dir / "results" / out_name / "result.json")["timing"]
        overheads.append(wall - timing["total_seconds"])
        inside.append(timing["total_seconds"])
    return overheads, inside


def playbook_overheads(playbook: Playbook, count: int) -> tuple[list[float], float, int]:
    """(overhead between consecutive experiments, playbook wall s, loads) of one campaign run."""
    host = playbook.host("playbook")
    campaign = tiny_campaign("benchorch", cycles=count // 2, window_seconds=WINDOW_SECONDS)
    _, wall = playbook.run(host, campaign)
    results = playbook.results(host, "benchorch")
    gaps = []
    for previous, current in itertools.pairwise(result["timing"] for result in results):
        between = seconds_between(previous["finished_at"], current["started_at"])
        gaps.append(between - current["load_seconds"])
    loads = sum(1 for result in results if not result["timing"]["model_reused"])
    return gaps, wall, loads


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20, help="Per mode (even).")
    parser.add_argument("--no-playbook", action="store_true", help="Skip the playbook run.")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args()
    image = cpu_image()
    models = tiny_model(args.cache_dir / "models")
    experiments = experiment_ids(args.experiments)
    with tempfile.TemporaryDirectory(prefix="lem-bench-orch-") as work:
        with running_service(Path(work) / "service", image, models) as service:
            write_configs(service, experiments)
            worker, worker_inside = measure(service, experiments, "a", via_exec)
            direct, _ = measure(service, experiments, "a2", via_module_exec(service))
            fresh, fresh_inside = measure(service, experiments, "b", via_exec, "--no-worker")
            container, container_inside = measure(service, experiments, "c", via_run)
        if not args.no_playbook:
            playbook = Playbook(Path(work), args.cache_dir)
            gaps, playbook_wall, loads = playbook_overheads(playbook, args.experiments)
    print(f"orchestration overhead per experiment: {args.experiments} experiments per mode,")
    print(f"image {image}, tiny model, windows >= {WINDOW_SECONDS} s (wall - load-to-result)")
    print(describe("(a) exec, worker", worker))
    print(describe("(a') docker exec (module's path), worker", direct))
    print(describe("(b) exec, --no-worker", fresh))
    print(describe("(c) compose run --rm", container))
    print(describe("in container (a): load to result", worker_inside))
    print(describe("in container (b): load to result", fresh_inside))
    print(describe("in container (c): load to result", container_inside))
    median_a = statistics.median(worker)
    print(f"ratio (a')/(a) median: {statistics.median(direct) / median_a:.2f}x")
    print(f"ratio (b)/(a) median: {statistics.median(fresh) / median_a:.1f}x")
    print(f"ratio (c)/(a) median: {statistics.median(container) / median_a:.1f}x")
    if not args.no_playbook:
        print(describe("(a) full playbook, between results", gaps))
        print(
            f"playbook: {len(gaps) + 1} experiments in {playbook_wall:.1f} s wall "
            f"(set-up and teardown included), model loads counted in results: {loads}"
        )


if __name__ == "__main__":
    main()
