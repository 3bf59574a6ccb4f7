#!/usr/bin/python
"""Ansible module: run one experiment of a campaign in a running compose service."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lem_experiment
short_description: Run one LLenergyMeasure experiment in a running compose service
description:
  - Runs C(lem experiment) inside the backend's running Docker Compose service through
    C(docker compose exec) (an argv list, no TTY), reads the C(result.json)
    it writes on the shared state volume, and records the experiment in the host's
    manifest (C(STATE_DIR/manifest.json)) through the C(llenergymeasure) package.
  - Idempotent. An experiment already C(completed) with the same config hash is not run
    again; its stored result is returned with C(changed=false).
  - An experiment found C(running) was interrupted; its partial output is moved aside
    and it runs again. A C(failed) one runs again when O(retry_failed) is true.
  - Before an interrupted experiment runs again, the module waits until no process of the
    service still runs it (a C(lem experiment) left by a controller that was killed; at
    most O(timeout) seconds and the grace period), then reads the manifest again. When
    the service's processes cannot be listed (C(docker compose top) fails), the task
    fails and the experiment is not started. Each
    manifest update is made only while the entry is still the one this attempt read, so
    an older attempt never overwrites a newer one's entry.
  - The service's main process is C(lem worker), which keeps the model loaded between
    experiments sharing a load key; the exec is a thin client, run with
    C(--require-worker), so that the experiment fails when no worker answers instead of
    running cold in the exec's own process. With O(cold_start) the
    worker loads the model from scratch; when only a restart of the service can give that
    cold start (exit 75), the module restarts the service, waits until it is healthy and
    runs the experiment again, once (see docs/worker.md).
  - Requires the C(llenergymeasure) package and C(python-on-whales) on the host's Python
    interpreter, and the Docker CLI with the Compose v2 plugin.
version_added: "0.1.0"
author: LLenergyMeasure maintainers
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the experiment would run and why; executes and writes nothing.
  diff_mode:
    support: full
    details: The manifest entry before and after.
  platform:
    support: full
    platforms: posix
options:
  exp_id:
    description: Experiment id from the plan (C(CAMPAIGN__CONFIG__cNN)).
    type: str
    required: true
  campaign_name:
    description: Name of the campaign.
    type: str
    required: true
  host:
    description: Inventory name of the host or lane running the experiment.
    type: str
    required: true
  config_name:
    description: Name of the experiment's configuration.
    type: str
    required: true
  cycle:
    description: Cycle number of this run of the configuration (from 1).
    type: int
    required: true
  backend:
    description: Backend of the configuration (C(pytorch), C(vllm), C(tensorrt)).
    type: str
    required: true
  config:
    description: The fully resolved experiment configuration, as in the plan.
    type: dict
    required: true
  config_hash:
    description: Hash of O(config) from the plan; must match the configuration given.
    type: str
    required: true
  state_dir:
    description:
      - The campaign's state directory on the host, mounted in the service at
        O(container_state_dir). Holds C(manifest.json), C(configs/) and C(results/).
    type: path
    required: true
  container_state_dir:
    description: Where O(state_dir) is mounted inside the service's container.
    type: str
    default: /lem/state
  project_name:
    description: Docker Compose project name of the host's services.
    type: str
    required: true
  compose_files:
    description: Compose files of the project.
    type: list
    elements: path
    required: true
  service:
    description: Compose service to run the experiment in; must exist in O(compose_files).
    type: str
    required: true
  retry_failed:
    description: Run an experiment recorded as C(failed) again.
    type: bool
    default: true
  gap_seconds:
    description:
      - Seconds to wait before the experiment, so the GPU cools down between runs; with
        O(gap_mode=thermal), the most to wait.
      - Only waited when the experiment will actually run, and never in check mode.
      - The time actually waited is passed to C(lem experiment --gap-waited) and recorded
        in the result (C(timing.gap_waited_seconds)).
    type: float
    default: 0
  gap_mode:
    description:
      - C(fixed) sleeps O(gap_seconds).
      - C(thermal) runs C(lem wait-cool) in the service, which returns once every GPU is
        back within the tolerances of its idle temperature and power (from
        C(baseline.json) in the state directory), at most O(gap_seconds) later. Where it
        cannot tell (no NVML, no baseline) the gap is waited as C(fixed).
    type: str
    choices: [fixed, thermal]
    default: fixed
  thermal_temp_tolerance_c:
    description: With O(gap_mode=thermal), degrees Celsius above idle that count as cool.
    type: float
    default: 2.0
  thermal_power_tolerance_pct:
    description: With O(gap_mode=thermal), percent above idle power that counts as cool.
    type: float
    default: 10.0
  cold_start:
    description:
      - Load the model from scratch for this experiment (C(lem experiment --cold-start))
        instead of reusing the one the service's worker holds.
    type: bool
    default: false
  restart_allowed:
    description:
      - Whether the service may be restarted when the worker answers that only a restart
        gives the cold start asked for (exit 75), or when its worker is frozen or does not
        stop an experiment past O(timeout). When false the experiment is recorded failed
        without the restart (the caller's restart budget is spent).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the service to be healthy again after a restart.
    type: int
    default: 600
  timeout:
    description:
      - Seconds the experiment may take; it is then recorded failed, C(timed out after N s).
      - The exec (a thin client) is stopped by C(timeout) from coreutils, and the worker is
        asked to stop the experiment (C(lem worker --status --cancel)); it stops at its next
        stage. When the worker does not answer within seconds (frozen), or has not stopped
        it after a grace period, the service is restarted (if O(restart_allowed)) and
        C(service_restarted) is returned true, so that the next experiments find a worker that
        serves them (see docs/reliability.md).
    type: int
  environment:
    description:
      - Extra environment variables for the experiment process (for example C(HF_TOKEN)).
      - Values never appear in any command line, the manifest, the result or the output;
        only the variable names are passed to C(docker compose exec).
    type: dict
    default: {}
notes:
  - The experiment's command line is an argument list, never a shell string, so values
    of the configuration are carried as data.
  - The services of O(compose_files) are read with C(docker compose config) once and kept
    in C(STATE_DIR/.compose-services.json), keyed by the files' paths, sizes and
    modification times, so that each experiment does not pay for it again.
seealso:
  - module: lem_manifest
  - module: lem_plan
requirements:
  - llenergymeasure
  - python-on-whales
  - Docker CLI with the Compose v2 plugin
"""

EXAMPLES = r"""
- name: Run each pending experiment
  lem_experiment:
    exp_id: "{{ item.exp_id }}"
    campaign_name: "{{ lem_plan.campaign_name }}"
    host: "{{ inventory_hostname }}"
    config_name: "{{ item.config_name }}"
    cycle: "{{ item.cycle }}"
    backend: "{{ item.backend }}"
    config: "{{ item.config }}"
    config_hash: "{{ item.config_hash }}"
    state_dir: "{{ lem_state_dir }}"
    project_name: "{{ lem_compose_project }}"
    compose_files: ["{{ lem_state_dir }}/compose.yml"]
    service: "{{ item.backend }}"
    gap_seconds: "{{ item.gap_seconds }}"
    environment:
      HF_TOKEN: "{{ lem_hf_token | default(omit) }}"
  loop: "{{ lem_pending | lem_with_gaps(60, 300) }}"
  loop_control:
    label: "{{ item.exp_id }}"
  register: lem_runs
  failed_when: false
"""

RETURN = r"""
exp_id:
  description: The experiment id.
  returned: always
  type: str
  sample: demo__tiny-bs1__c02
status:
  description:
    - Manifest status after the task, C(completed) or C(failed).
    - C(pending) in check mode when the experiment would run.
  returned: always
  type: str
  sample: completed
detail:
  description: The resume decision as a sentence.
  returned: always
  type: str
  sample: not run yet
reason:
  description:
    - Why it ran or not, from the manifest's resume rule
      (C(new), C(completed), C(interrupted), C(failed-retry), C(failed-kept), C(config-changed)),
      or C(result-missing) for a completed experiment whose result file is gone (it runs again).
  returned: always
  type: str
  sample: new
attempts:
  description: Number of attempts recorded in the manifest.
  returned: always
  type: int
  sample: 1
result_path:
  description: Path of C(result.json) relative to O(state_dir).
  returned: when status is completed
  type: str
  sample: results/demo__tiny-bs1__c02/result.json
metrics:
  description:
    - Headline numbers of the result (energy, J per token, throughput, latency, load time).
    - Null where the host could not measure them.
  returned: when status is completed
  type: dict
  sample: {"energy_j": 41.2, "output_tokens_per_s": 1520.3, "j_per_output_token": 0.027}
result:
  description: The content of C(result.json).
  returned: when status is completed
  type: dict
error:
  description: The recorded error of a failed experiment.
  returned: when status is failed
  type: str
rc:
  description: Exit status of C(lem experiment) (124 when stopped by O(timeout)).
  returned: when the experiment ran and failed
  type: int
  sample: 1
stderr_tail:
  description: Last lines of the experiment's stderr.
  returned: when the experiment ran and failed
  type: str
service_restarted:
  description:
    - Whether the service was restarted to give the experiment its cold start (exit 75),
      or because its worker was frozen or kept running the experiment past O(timeout).
      Callers count it against their restart budget.
  returned: when the experiment ran
  type: bool
gap:
  description: The gap waited before the experiment.
  returned: when the experiment ran
  type: dict
  contains:
    mode:
      description: C(fixed) or C(thermal), as asked.
      type: str
    outcome:
      description:
        - C(none) (no gap), C(fixed), or what C(lem wait-cool) answered (C(cool), C(cap));
          C(no-gpu), C(no-baseline) or C(wait-cool-failed) when a thermal gap was waited
          as fixed instead.
      type: str
    waited_seconds:
      description: Seconds actually waited.
      type: float
  sample: {"mode": "thermal", "outcome": "cool", "waited_seconds": 41.0}
"""

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from pydantic import TypeAdapter, ValidationError

    from llenergymeasure.campaign.attempts import attempt_pids_from_top, wait_for_attempts_to_end
    from llenergymeasure.campaign.manifest import (
        ManifestEntry,
        decide,
        load_manifest,
        move_aside,
        replace_entry,
    )
    from llenergymeasure.campaign.plan import config_hash, exp_id
    from llenergymeasure.config.loader import parse_experiment
    from llenergymeasure.config.models import ExperimentConfig, SafeName
    from llenergymeasure.dispatch.timeouts import stop_timed_out, wait_for_worker
    from llenergymeasure.errors import LemError
    from llenergymeasure.files import atomic_write_text
    from llenergymeasure.results.schema import ExperimentResult
    from llenergymeasure.runner.protocol import WorkerStats
except ImportError:
    LEM_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    LEM_IMPORT_ERROR = None
    SAFE_NAME: TypeAdapter[str] = TypeAdapter(SafeName)

if TYPE_CHECKING:
    from python_on_whales.components.compose.cli_wrapper import ComposeCLI

# python-on-whales is imported when a project operation needs it (see ComposeProject).
WHALES_MISSING = importlib.util.find_spec("python_on_whales") is None

STDERR_TAIL_LINES = 20
TIMEOUT_EXIT_CODE = 124  # coreutils `timeout` exit status when the limit was hit
TIMEOUT_KILL_AFTER_SECONDS = 30  # after TERM, time to exit cleanly before KILL
SIGKILL_EXIT_CODE = 137  # a container's main process killed with SIGKILL (docker kill)
# How long an earlier attempt left running by a killed controller is waited for, when
# the experiments have no timeout of their own.
EARLIER_ATTEMPT_WAIT_SECONDS = 3600
NEEDS_RESTART_EXIT_CODE = 75  # `lem experiment`: only a service restart makes this cold start
# The docker exec of `lem worker --status`, whose own reply timeout (seconds) tells a
# frozen worker; this one only bounds a docker CLI that hangs.
WORKER_PROBE_EXEC_TIMEOUT = 60
SERVICES_CACHE = ".compose-services.json"  # in state_dir; see the notes of DOCUMENTATION
# `lem wait-cool` reasons meaning "cannot tell": the gap is then waited as a fixed one.
THERMAL_UNKNOWN = ("no-gpu", "no-baseline")

ARGUMENT_SPEC: dict[str, Any] = {
    "exp_id": {"type": "str", "required": True},
    "campaign_name": {"type": "str", "required": True},
    "host": {"type": "str", "required": True},
    "config_name": {"type": "str", "required": True},
    "cycle": {"type": "int", "required": True},
    "backend": {"type": "str", "required": True},
    "config": {"type": "dict", "required": True},
    "config_hash": {"type": "str", "required": True},
    "state_dir": {"type": "path", "required": True},
    "container_state_dir": {"type": "str", "default": "/lem/state"},
    "project_name": {"type": "str", "required": True},
    "compose_files": {"type": "list", "elements": "path", "required": True},
    "service": {"type": "str", "required": True},
    "retry_failed": {"type": "bool", "default": True},
    "gap_seconds": {"type": "float", "default": 0.0},
    "gap_mode": {"type": "str", "default": "fixed", "choices": ["fixed", "thermal"]},
    "thermal_temp_tolerance_c": {"type": "float", "default": 2.0},
    "thermal_power_tolerance_pct": {"type": "float", "default": 10.0},
    "cold_start": {"type": "bool", "default": False},
    "restart_allowed": {"type": "bool", "default": True},
    "wait_timeout": {"type": "int", "default": 600},
    "timeout": {"type": "int"},
    "environment": {"type": "dict", "default": {}, "no_log": True},
}


class ExperimentFailed(Exception):
    """The exec or its result failed: what the manifest records and the task returns."""

    def __init__(self, cause: str, rc: int | None = None, stderr: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.rc = rc
        self.stderr_tail = "\n".join(stderr.splitlines()[-STDERR_TAIL_LINES:])


class NeedsRestart(ExperimentFailed):
    """`lem experiment` exited 75: the cold start asked for needs a restart of the service."""


class TimedOut(ExperimentFailed):
    """The exec was stopped by `timeout`: the worker may still run the experiment."""


@dataclass(frozen=True)
class Gap:
    """The gap waited before an experiment, as the task returns it."""

    mode: str
    outcome: str
    waited_seconds: float


class ExperimentRun:
    """One experiment: the module's parameters and the paths derived from them."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.exp_id: str = params["exp_id"]
        self.state_dir = Path(params["state_dir"])
        self.manifest_path = self.state_dir / "manifest.json"
        self.result_path = f"results/{self.exp_id}/result.json"  # relative to state_dir
        self.services_cache = self.state_dir / SERVICES_CACHE
        self.config = self._checked_config()
        self.service_restarted = False

    def _checked_config(self) -> ExperimentConfig:
        """The validated config; names, limits and the plan's fields are checked first.

        The plan's exp_id, name, backend and hash must agree with the config, or results
        of different configs would mix under one id.
        """
        p = self.params
        try:
            SAFE_NAME.validate_python(p["campaign_name"])
        except ValidationError:
            raise LemError(
                f"campaign_name: {p['campaign_name']!r} is not a safe name "
                "(letters, digits, '.', '_', '-'; no '..')"
            ) from None
        minimums = (
            ("cycle", 1),
            ("gap_seconds", 0),
            ("timeout", 1),
            ("wait_timeout", 1),
            ("thermal_temp_tolerance_c", 0),
            ("thermal_power_tolerance_pct", 0),
        )
        for key, minimum in minimums:
            if p[key] is not None and p[key] < minimum:
                raise LemError(f"{key}: {p[key]} is less than the minimum {minimum}")
        config = parse_experiment(p["config"], self.exp_id, ("config",))
        expected = {
            "config_name": config.config_name,
            "backend": config.backend,
            "exp_id": exp_id(p["campaign_name"], config.config_name, p["cycle"]),
            "config_hash": config_hash(config),
        }
        for key, value in expected.items():
            if p[key] != value:
                raise LemError(f"{key}: {p[key]!r} does not match the config (expected {value!r})")
        return config

    def replace(self, expected: ManifestEntry | None, entry: ManifestEntry) -> None:
        """Record `entry` while the manifest still holds `expected` (ManifestConflict if not)."""
        p = self.params
        replace_entry(self.manifest_path, p["campaign_name"], p["host"], expected, entry)

    def read_result(self) -> ExperimentResult:
        """This experiment's validated result; ExperimentFailed when missing or foreign."""
        path = self.state_dir / self.result_path
        try:
            result = ExperimentResult.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise ExperimentFailed(f"no result at {path}: {exc.strerror}") from None
        except ValidationError as exc:
            raise ExperimentFailed(
                f"{path}: not a valid result: {exc.errors()[0]['msg']}"
            ) from None
        found = (result.identity.exp_id, result.identity.config_hash)
        if found != (self.exp_id, self.params["config_hash"]):
            raise ExperimentFailed(
                f"{path}: result is for {found[0]!r} with hash {found[1]!r}, not "
                f"{self.exp_id!r} with hash {self.params['config_hash']!r}"
            )
        return result


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ComposeProject:
    """The task's compose project: python-on-whales' compose client for the project
    operations (config, ps, restart, up, the exec of `lem wait-cool`), and the
    `docker compose` command line.

    python-on-whales is imported on first use of `compose`: the import takes about a
    tenth of a second, a good share of a task, and the one call every experiment makes,
    the exec of `lem experiment`, runs the command line python-on-whales would build
    with subprocess instead.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.files: list[str] = list(params["compose_files"])
        self.name: str = params["project_name"]

    @functools.cached_property
    def compose(self) -> ComposeCLI:
        from python_on_whales import DockerClient

        return DockerClient(compose_files=self.files, compose_project_name=self.name).compose

    def command(self, *args: str) -> list[str]:
        """`docker compose --file F ... --project-name P ARGS`, as python-on-whales builds it."""
        files = [arg for name in self.files for arg in ("--file", name)]
        return ["docker", "compose", *files, "--project-name", self.name, *args]


def docker_error() -> type[Exception]:
    """python-on-whales' DockerException, for the `except` clauses around its calls (a
    failed call has imported it already)."""
    from python_on_whales.exceptions import DockerException

    return DockerException


def compose_client(params: dict[str, Any]) -> ComposeProject:
    return ComposeProject(params)


def compose_files_key(params: dict[str, Any]) -> list[list[Any]]:
    """What the services of the project depend on: each file's path, size and mtime."""
    key: list[list[Any]] = [["project", params["project_name"]]]
    for name in params["compose_files"]:
        try:
            info = os.stat(name)
        except OSError:
            return []  # a missing file: let `docker compose config` name the problem
        key.append([name, info.st_size, info.st_mtime_ns])
    return key


def compose_services(
    docker: ComposeProject, params: dict[str, Any], cache: Path | None
) -> list[str]:
    """The services of the compose project, from `cache` when its files are unchanged.

    `docker compose config` costs a tenth of a second or more per call; an experiment
    loop over an unchanged project asks it once. The cache is written only when given.
    """
    key = compose_files_key(params)
    if cache is not None and key:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if cached.get("key") == key:
                return list(cached["services"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no cache or a broken one: read the project and write it again
    try:
        services = sorted(docker.compose.config(return_json=True).get("services") or {})
    except docker_error() as exc:
        raise LemError(
            f"compose_files: cannot read {params['compose_files']}: {last_line(exc.stderr)}"
        ) from None
    if cache is not None and key and params["service"] in services:
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write_text(cache, json.dumps({"key": key, "services": services}) + "\n")
    return services


def check_service(docker: ComposeProject, params: dict[str, Any], cache: Path | None) -> None:
    """Fail before anything is written when the service is not in the compose project."""
    services = compose_services(docker, params, cache)
    if params["service"] not in services:
        raise LemError(
            f"service: {params['service']!r} is not a service of {params['compose_files']} "
            f"(services: {', '.join(sorted(services)) or 'none'})"
        )


def experiment_argv(params: dict[str, Any], gap_waited: float) -> list[str]:
    """The in-container command line of docs/architecture.md, as an argument list."""
    root = params["container_state_dir"].rstrip("/")
    name = params["exp_id"]
    argv = [
        "lem",
        "experiment",
        f"{root}/configs/{name}.json",
        "--out",
        f"{root}/results/{name}",
        "--exp-id",
        name,
        "--config-hash",
        params["config_hash"],
        "--cycle",
        str(params["cycle"]),
        "--campaign",
        params["campaign_name"],
        "--host",
        params["host"],
        "--gap-waited",
        f"{gap_waited:.3f}",
    ]
    argv.append("--require-worker")  # never a cold in-process run inside a warm campaign
    if params["cold_start"]:
        argv.append("--cold-start")
    if params["timeout"]:
        limit = ["timeout", f"--kill-after={TIMEOUT_KILL_AFTER_SECONDS}", str(params["timeout"])]
        return limit + argv
    return argv


def execute(docker: ComposeProject, params: dict[str, Any], gap_waited: float) -> None:
    """`docker compose exec --no-TTY SERVICE lem experiment ...`; ExperimentFailed on error,
    NeedsRestart when only a restart of the service can make the cold start asked for.

    Not python-on-whales' `compose.execute(envs=...)`, which puts each variable's value on
    the docker CLI's command line (visible in `ps`): here only the names are there, and
    the values reach the CLI through its environment.
    """
    environment = {str(name): str(value) for name, value in params["environment"].items()}
    env_names = [arg for name in sorted(environment) for arg in ("--env", name)]
    command = docker.command("exec", "--no-TTY", *env_names, params["service"])
    try:
        completed = subprocess.run(
            [*command, *experiment_argv(params, gap_waited)],
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise ExperimentFailed(f"cannot run the docker CLI: {exc.strerror or exc}") from None
    if completed.returncode == 0:
        return
    rc, stderr = completed.returncode, completed.stderr
    timed_out = rc == TIMEOUT_EXIT_CODE and bool(params["timeout"])
    if timed_out:
        cause = f"timed out after {params['timeout']} s"
    else:
        cause = last_line(stderr) or f"lem experiment exited with status {rc}"
    stopped = service_stopped(docker, params["service"])
    if stopped:
        cause = f"service {params['service']!r} stopped during the experiment ({stopped}): {cause}"
        raise ExperimentFailed(cause, rc, stderr)  # nothing of it runs any more
    if timed_out:
        raise TimedOut(cause, rc, stderr)
    failure = NeedsRestart if rc == NEEDS_RESTART_EXIT_CODE else ExperimentFailed
    raise failure(cause, rc, stderr)


def service_stopped(docker: ComposeProject, service: str) -> str | None:
    """Why the service's container is not running, after a failed exec; None while it runs.

    Asked only after a failure, so that "killed" or "daemon restarted" is said plainly
    instead of the docker CLI's last line alone.
    """
    try:
        states = [
            (c.state.status, c.state.exit_code)
            for c in docker.compose.ps(services=[service], all=True)
        ]
    except docker_error() as exc:
        return f"the Docker daemon did not answer: {last_line(exc.stderr) or exc.return_code}"
    if any(status == "running" for status, _ in states):
        return None
    if not states:
        return "its container is gone"
    status, code = states[0]
    killed = " (killed)" if code == SIGKILL_EXIT_CODE else ""
    return f"its container is {status} with exit code {code}{killed}"


def restart_service(docker: ComposeProject, params: dict[str, Any], why: str) -> None:
    """Restart the service and wait until it is healthy and its fresh worker answers."""
    service = params["service"]
    try:
        docker.compose.restart(services=[service])
        docker.compose.up(
            services=[service],
            detach=True,
            wait=True,
            wait_timeout=params["wait_timeout"],
            recreate=False,
            no_build=True,
            pull="never",
            quiet=True,
        )
    except docker_error() as exc:
        cause = f"restarting service {service!r} {why} failed: {last_line(exc.stderr)}"
        raise ExperimentFailed(cause, exc.return_code, exc.stderr or "") from None
    limit = params["wait_timeout"]
    if wait_for_worker(lambda: worker_stats(docker, service, None), limit) is None:
        raise ExperimentFailed(
            f"service {service!r} restarted {why}, but its worker did not answer within {limit} s"
        )


def execute_with_restart(docker: ComposeProject, task: ExperimentRun, gap_waited: float) -> None:
    """Execute; when the worker answers that only a restart gives the cold start asked
    for (exit 75), restart the service once, if allowed, and execute again. Past the
    timeout, the experiment is stopped in the worker too (`stop_in_worker`)."""
    try:
        try:
            execute(docker, task.params, gap_waited)
            return
        except NeedsRestart as exc:
            if not task.params["restart_allowed"]:
                raise ExperimentFailed(
                    f"{exc.cause} (no service restart left: health_check.max_restarts is spent)",
                    exc.rc,
                ) from None
        restart_service(docker, task.params, "for a cold start")
        task.service_restarted = True
        try:
            execute(docker, task.params, gap_waited)
        except NeedsRestart as exc:
            raise ExperimentFailed(
                f"{exc.cause} (even after a restart of the service)", exc.rc
            ) from None
    except TimedOut as exc:
        stop_in_worker(docker, task, exc)


def stop_in_worker(docker: ComposeProject, task: ExperimentRun, timed_out: TimedOut) -> None:
    """After the exec timed out: have the worker stop the experiment, or restart the
    service when the worker is frozen or does not stop it; raises ExperimentFailed."""
    service = task.params["service"]
    outcome = stop_timed_out(task.exp_id, lambda cancel: worker_stats(docker, service, cancel))
    cause = f"{timed_out.cause}: {outcome.detail}"
    if outcome.restart and not task.params["restart_allowed"]:
        cause += f"; service {service!r} not restarted: health_check.max_restarts is spent"
    elif outcome.restart:
        try:
            restart_service(docker, task.params, "after a timed-out experiment")
        except ExperimentFailed as exc:
            raise ExperimentFailed(f"{cause}; {exc.cause}", exc.rc, exc.stderr_tail) from None
        task.service_restarted = True
        cause += f"; service {service!r} restarted"
    raise ExperimentFailed(cause, timed_out.rc, timed_out.stderr_tail)


def worker_stats(docker: ComposeProject, service: str, cancel: str | None) -> WorkerStats | None:
    """`lem worker --status [--cancel EXP_ID]` in the service; None when the worker does
    not answer (frozen, gone) or the exec cannot be made."""
    argv = ["lem", "worker", "--status", *(["--cancel", cancel] if cancel else [])]
    try:
        probe = subprocess.run(
            docker.command("exec", "--no-TTY", service, *argv),
            capture_output=True,
            text=True,
            timeout=WORKER_PROBE_EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.returncode != 0:
        return None
    try:
        return WorkerStats.model_validate_json(last_line(probe.stdout))
    except ValidationError:
        return None


def wait_cool(docker: ComposeProject, params: dict[str, Any]) -> dict[str, Any]:
    """Run `lem wait-cool` in the service: its JSON answer (waited_seconds, reason, ...)."""
    root = params["container_state_dir"].rstrip("/")
    argv = [
        "lem",
        "wait-cool",
        "--max-seconds",
        str(params["gap_seconds"]),
        "--baseline",
        f"{root}/baseline.json",
        "--temp-tolerance",
        str(params["thermal_temp_tolerance_c"]),
        "--power-tolerance-pct",
        str(params["thermal_power_tolerance_pct"]),
    ]
    stdout = docker.compose.execute(params["service"], argv, tty=False) or ""
    return json.loads(stdout.strip().splitlines()[-1])


def wait_gap(module: AnsibleModule, docker: ComposeProject, params: dict[str, Any]) -> Gap:
    """Wait the gap before the experiment: fixed, or until the GPUs are cool (capped)."""
    seconds, mode = params["gap_seconds"], params["gap_mode"]
    if seconds <= 0:
        return Gap(mode, "none", 0.0)
    outcome = "fixed"
    if mode == "thermal":
        try:
            answer = wait_cool(docker, params)
            outcome = str(answer["reason"])
            if outcome not in THERMAL_UNKNOWN:
                return Gap(mode, outcome, float(answer["waited_seconds"]))
        except (docker_error(), ValueError, KeyError, TypeError, IndexError) as exc:
            module.warn(f"lem wait-cool failed ({exc}): waiting a fixed gap of {seconds} s")
            outcome = "wait-cool-failed"
    started = time.monotonic()
    time.sleep(seconds)
    return Gap(mode, outcome, round(time.monotonic() - started, 3))


def entry_dict(entry: ManifestEntry | None) -> dict[str, Any]:
    return entry.model_dump(mode="json") if entry is not None else {}


def completed_fields(entry: ManifestEntry, result: ExperimentResult) -> dict[str, Any]:
    return {
        "status": entry.status,
        "attempts": entry.attempts,
        "result_path": entry.result_path,
        "metrics": result.headline_metrics(),
        "result": result.model_dump(mode="json"),
    }


def started_entry(task: ExperimentRun, previous: ManifestEntry | None) -> ManifestEntry:
    """The manifest entry of an attempt that starts now."""
    p = task.params
    return ManifestEntry(
        exp_id=task.exp_id,
        config_name=p["config_name"],
        config_hash=p["config_hash"],
        backend=p["backend"],
        service=p["service"],
        cycle=p["cycle"],
        status="running",
        attempts=(previous.attempts if previous is not None else 0) + 1,
        started_at=utc_now(),
    )


def diff_of(
    module: AnsibleModule, before: ManifestEntry | None, after: ManifestEntry
) -> dict[str, Any]:
    """`diff=` for exit_json: the manifest entry before and after, in diff mode only."""
    if not module._diff:
        return {}
    return {"diff": {"before": entry_dict(before), "after": entry_dict(after)}}


def exit_if_settled(
    module: AnsibleModule, task: ExperimentRun, previous: ManifestEntry | None, base: dict[str, Any]
) -> None:
    """Exit with changed=false when the manifest says there is nothing to run.

    Updates `base` with the reason to run otherwise; a completed experiment whose result
    file cannot be read runs again (`result-missing`), since the work is not really done.
    """
    decision = decide(previous, task.params["config_hash"], task.params["retry_failed"])
    base |= {"reason": decision.reason, "detail": decision.detail}
    if previous is None or decision.run:
        return
    if decision.reason != "completed":  # a failure kept by policy
        module.exit_json(
            changed=False,
            status=previous.status,
            attempts=previous.attempts,
            error=previous.error,
            **base,
        )
    try:
        result = task.read_result()
    except ExperimentFailed as exc:
        base |= {
            "reason": "result-missing",
            "detail": f"completed before, but {exc.cause}: running again",
        }
    else:
        module.exit_json(changed=False, **base, **completed_fields(previous, result))


def run(module: AnsibleModule) -> None:
    task = ExperimentRun(module.params)
    previous = load_manifest(task.manifest_path).entries.get(task.exp_id)
    base = {key: task.params[key] for key in ("exp_id", "config_name", "cycle", "host")}
    exit_if_settled(module, task, previous, base)
    docker = compose_client(task.params)
    check_service(docker, task.params, None if module.check_mode else task.services_cache)
    started = started_entry(task, previous)
    if module.check_mode:
        module.exit_json(
            changed=True,
            status="pending",
            attempts=started.attempts - 1,
            **diff_of(module, previous, started),
            **base,
        )
    previous = settle_earlier_attempt(module, task, docker, previous, base)
    started = started_entry(task, previous)
    gap = wait_gap(module, docker, task.params)
    start(task, previous, started)
    finish(module, task, docker, previous, started, base | {"gap": asdict(gap)})


def earlier_attempt_pids(docker: ComposeProject, params: dict[str, Any]) -> list[int]:
    """Pids of processes in the service still running this experiment (`docker compose top`);
    AttemptLookupFailed (a LemError: the task fails, nothing started) when top fails."""
    try:
        top = subprocess.run(
            docker.command("top", params["service"]), capture_output=True, text=True, check=False
        )
    except OSError as exc:
        return attempt_pids_from_top(127, "", f"cannot run the docker CLI: {exc}", params["exp_id"])
    return attempt_pids_from_top(top.returncode, top.stdout, top.stderr, params["exp_id"])


def settle_earlier_attempt(
    module: AnsibleModule,
    task: ExperimentRun,
    docker: ComposeProject,
    previous: ManifestEntry | None,
    base: dict[str, Any],
) -> ManifestEntry | None:
    """After an interrupted attempt, wait for it to end in the service, then decide again.

    The `lem experiment` exec'd by a controller that was killed keeps running in the
    container and writes its result when it ends: measuring beside it would share the
    machine, and it could write into this attempt's results directory. Its module, when
    it survived too, may record it completed meanwhile: then there is nothing to run.
    """
    if previous is None or previous.status != "running":
        return previous
    limit = (task.params["timeout"] or EARLIER_ATTEMPT_WAIT_SECONDS) + TIMEOUT_KILL_AFTER_SECONDS
    still_running = wait_for_attempts_to_end(
        lambda: earlier_attempt_pids(docker, task.params), limit
    )
    if still_running:
        raise LemError(
            f"{task.exp_id}: an earlier attempt still runs in service {task.params['service']!r} "
            f"(host pids {', '.join(map(str, still_running))}) after {limit} s: stop it, "
            "then run the campaign again"
        )
    previous = load_manifest(task.manifest_path).entries.get(task.exp_id)
    exit_if_settled(module, task, previous, base)
    return previous


def start(task: ExperimentRun, previous: ManifestEntry | None, started: ManifestEntry) -> None:
    """Mark running, set earlier output aside, write the config file (after the gap).

    Marked first, and only while the entry is still `previous`: a newer attempt never
    has its output moved or its entry replaced by an older one.
    """
    task.replace(previous, started)
    if previous is not None:
        move_aside(task.state_dir / "results", task.exp_id)
    config_file = task.state_dir / "configs" / f"{task.exp_id}.json"
    try:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_file, task.config.model_dump_json(indent=2) + "\n")
    except OSError as exc:
        raise LemError(f"{config_file}: cannot write config: {exc.strerror or exc}") from None


def finish(
    module: AnsibleModule,
    task: ExperimentRun,
    docker: ComposeProject,
    previous: ManifestEntry | None,
    started: ManifestEntry,
    base: dict[str, Any],
) -> None:
    """Execute, then record the experiment completed or failed; exits the module."""
    try:
        execute_with_restart(docker, task, base["gap"]["waited_seconds"])
        result = task.read_result()
    except ExperimentFailed as exc:
        failed = started.model_copy(
            update={"status": "failed", "error": exc.cause, "completed_at": utc_now()}
        )
        task.replace(started, failed)
        module.fail_json(
            msg=f"{task.exp_id}: {exc.cause}",
            changed=True,
            status="failed",
            attempts=failed.attempts,
            error=exc.cause,
            rc=exc.rc,
            stderr_tail=exc.stderr_tail,
            service_restarted=task.service_restarted,
            **diff_of(module, previous, failed),
            **base,
        )
    completed = started.model_copy(
        update={"status": "completed", "result_path": task.result_path, "completed_at": utc_now()}
    )
    task.replace(started, completed)
    module.exit_json(
        changed=True,
        service_restarted=task.service_restarted,
        **diff_of(module, previous, completed),
        **base,
        **completed_fields(completed, result),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if LEM_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("llenergymeasure"), exception=LEM_IMPORT_ERROR)
    if WHALES_MISSING:
        module.fail_json(msg=missing_required_lib("python-on-whales"))
    try:
        run(module)
    except LemError as exc:
        module.fail_json(msg=str(exc), exp_id=module.params["exp_id"])


if __name__ == "__main__":
    main()
