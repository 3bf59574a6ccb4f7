"""What the Docker benches share: the CPU image, the tiny model, a compose service of the
CPU image, and campaign playbook runs on localhost.

The compose file is rendered from docker/compose.yml.j2 (as the integration tests do) and
playbooks are run the way `lem run` runs them (`commands.drive.run_campaign`, through
ansible-runner), so a bench measures the product's own path.
Models and the host venv the playbook installs are kept under --cache-dir between runs,
so that a second run of a bench measures the campaign, not the set-up.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient

from llenergymeasure.commands.drive import run_campaign

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixtures that render compose files, run playbooks

from fixtures.campaign import (  # noqa: E402
    CampaignRun,
    HostDirs,
    compose_down,
    write_yaml,
)
from fixtures.compose import cpu_host_variables, render_compose  # noqa: E402

LEM = Path(sys.executable).with_name("lem")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lem-bench"
SERVICE = "pytorch"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def cpu_image() -> str:
    """Tag of the CPU image of this checkout (scripts/build-images.sh builds only on change)."""
    build = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh"), "--backend", "pytorch-cpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        sys.exit(f"scripts/build-images.sh failed:\n{build.stderr[-3000:]}")
    return build.stdout.strip().splitlines()[-1]


def tiny_model(models_dir: Path) -> Path:
    """`models_dir`, holding the tiny model at tiny/ (made once with `lem model tiny`)."""
    if not (models_dir / "tiny" / "config.json").is_file():
        models_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(LEM), "model", "tiny", "--out", str(models_dir / "tiny")], check=True)
    return models_dir


def tiny_config(name: str, batch_size: int, window_seconds: float) -> dict[str, Any]:
    """A config of the tiny model with a window of at least `window_seconds`."""
    return {
        "config_name": name,
        "backend": "pytorch",
        "model": {"path": "/models/tiny"},
        "decoder": {"max_new_tokens": 8},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 4},
        "measurement": {
            "warmup_prompts": 1,
            "min_window_seconds": window_seconds,
            "baseline_seconds": 0,
        },
        "pytorch": {"batch_size": batch_size},
    }


def tiny_campaign(
    name: str, cycles: int, window_seconds: float, batch_sizes: tuple[int, ...] = (1, 2)
) -> dict[str, Any]:
    """len(batch_sizes) configs sharing one load key x `cycles`, interleaved, no gaps."""
    return {
        "campaign_name": name,
        "configs": [tiny_config(f"bs{b}", b, window_seconds) for b in batch_sizes],
        "execution": {"cycles": cycles, "order": "interleaved"},
    }


@dataclass(frozen=True)
class Service:
    """The pytorch service of a compose project rendered from docker/compose.yml.j2."""

    root: Path
    project: str

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def compose_file(self) -> Path:
        return self.root / "compose.yml"

    def client(self) -> DockerClient:
        return DockerClient(compose_files=[self.compose_file], compose_project_name=self.project)


@contextmanager
def running_service(root: Path, image: str, models_dir: Path) -> Iterator[Service]:
    """The service up and healthy (its worker listening); taken down afterwards."""
    service = Service(root, f"lem-bench-{uuid.uuid4().hex[:8]}")
    service.state_dir.mkdir(parents=True)
    variables = cpu_host_variables(service.project, image, service.state_dir, models_dir)
    service.compose_file.write_text(render_compose(variables), encoding="utf-8")
    client = service.client()
    client.compose.up(detach=True, wait=True, quiet=True)
    try:
        yield service
    finally:
        client.compose.down(timeout=5, quiet=True)


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def describe(label: str, values: list[float], unit: str = "s") -> str:
    """One line: median, mean, min and max of `values`."""
    return (
        f"{label:<34} median {statistics.median(values):7.3f} {unit}   "
        f"mean {statistics.fmean(values):7.3f}   min {min(values):7.3f}   max {max(values):7.3f}"
    )


@dataclass(frozen=True)
class Playbook:
    """Campaign playbook runs on localhost, each with its own compose project and state."""

    work: Path
    cache_dir: Path

    def host(self, name: str) -> HostDirs:
        return HostDirs(
            root=self.work / name,
            project=f"lem-bench-{uuid.uuid4().hex[:8]}",
            venv=self.cache_dir / "venv",
            models=tiny_model(self.cache_dir / "models"),
        )

    def inventory(self) -> Path:
        localhost = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }
        return write_yaml(self.work / "inventory.yml", {"all": {"hosts": {"localhost": localhost}}})

    def run(self, host: HostDirs, campaign: dict[str, Any]) -> tuple[CampaignRun, float]:
        """Run `campaign` on `host`; the run and its wall time in seconds."""
        campaign_file = write_yaml(self.work / f"{campaign['campaign_name']}.yml", campaign)
        variables = {**host.variables(), "lem_results_dir": str(host.root / "results")}
        started = time.perf_counter()
        outcome = run_campaign(campaign_file, self.inventory(), variables, project_dir=REPO)
        wall = time.perf_counter() - started
        # The log is the playbook's output as a terminal shows it: colours dropped to parse.
        run = CampaignRun(outcome.rc, ANSI_ESCAPE.sub("", outcome.log.read_text(encoding="utf-8")))
        if run.returncode != 0:
            compose_down(host.project)
            sys.exit(f"the campaign playbook failed:\n{run.output[-4000:]}")
        return run, wall

    def results(self, host: HostDirs, campaign_name: str) -> list[dict[str, Any]]:
        """The campaign's result files on `host`, in the order they were measured."""
        paths = (host.root / "state" / campaign_name / "results").glob("*/result.json")
        results = [read_result(path) for path in paths]
        return sorted(results, key=lambda result: result["timing"]["started_at"])
