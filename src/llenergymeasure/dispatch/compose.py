"""The host's compose project: its services, their state, restarts, processes, the worker.

Everything here reaches Docker through a `Compose` (the small interface below): the
real one, `DockerCompose`, runs the docker CLI; unit tests give a
recording stand-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llenergymeasure.dispatch.errors import ComposeError, ExperimentFailed, last_line
from llenergymeasure.dispatch.timeouts import WorkerStatus, wait_for_worker
from llenergymeasure.errors import LemError
from llenergymeasure.files import atomic_write_text
from llenergymeasure.host.attempts import attempt_pids_from_top

SIGKILL_EXIT_CODE = 137  # a container's main process killed with SIGKILL (docker kill)
# The docker exec of `lem worker --status`, whose own reply timeout (seconds) tells a
# frozen worker; this one only bounds a docker CLI that hangs.
WORKER_PROBE_EXEC_TIMEOUT = 60


@dataclass(frozen=True)
class Completed:
    """A finished docker CLI run."""

    rc: int
    stdout: str
    stderr: str


class Compose(Protocol):
    """The Docker operations of the dispatch layer; ComposeError when one fails."""

    def cli(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """`docker compose ... ARGS`; OSError or subprocess.TimeoutExpired when it cannot run."""
        ...

    def config_services(self) -> list[str]: ...

    def ps(self, service: str) -> list[tuple[str, int | None]]:
        """(status, exit code) of each of the service's containers, stopped ones too."""
        ...

    def restart(self, service: str, wait_timeout: int) -> None:
        """Restart the service and wait until it is healthy."""
        ...

    def execute(self, service: str, argv: Sequence[str]) -> str:
        """Run `argv` in the service: its stdout."""
        ...


# A hung daemon must not hang the container look-up before an exec whose caller set a
# timeout: the look-up gives up after this, and compose's exec runs under that timeout.
LOOKUP_TIMEOUT_S = 30.0


class DockerCompose:
    """The real `Compose`: the docker CLI (`docker compose`), one subprocess per operation.

    No Python client library: python-on-whales would build the same command lines, but
    importing it (and the pydantic it brings) cost a good share of each task's start-up.
    """

    def __init__(self, files: Sequence[str], name: str) -> None:
        self.files = list(files)
        self.name = name

    def command(self, *args: str) -> list[str]:
        """`docker compose --file F ... --project-name P ARGS`; an exec as `docker exec`
        in the service's running container when there is one (`exec_command`)."""
        if args and args[0] == "exec":
            direct = self.exec_command(args[1:])
            if direct is not None:
                return direct
        files = [arg for name in self.files for arg in ("--file", name)]
        return ["docker", "compose", *files, "--project-name", self.name, *args]

    def exec_command(self, exec_args: Sequence[str]) -> list[str] | None:
        """`docker exec` of a `docker compose exec` (the options this package gives it:
        --no-TTY, --env NAME), in the service's running container; None when there is
        none, or the options are others: then compose runs it and says why it cannot.

        `docker compose exec` loads the whole project on each call: 0.153 s against
        0.097 s for the label look-up and `docker exec` together (docs/architecture.md).
        Compose's exec is interactive, with the container's own user and workdir: so is
        this one.
        """
        env_names, rest = [], list(exec_args)
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            if option == "--env" and rest:
                env_names += ["--env", rest.pop(0)]
            elif option != "--no-TTY":
                return None
        if not rest:
            return None
        container = self.running_container(rest[0])
        if container is None:
            return None
        return ["docker", "exec", "--interactive", *env_names, container, *rest[1:]]

    def running_container(self, service: str) -> str | None:
        """The id of the service's running container (the one `compose exec` picks, index
        1), by compose's labels; asked on each exec, so that a container replaced or
        stopped since is never exec'd into. None when there is none, or docker fails."""
        labels = {
            # a --project-name given is used as is (compose refuses one not normalized)
            "project": self.name,
            "service": service,
            "oneoff": "False",
            "container-number": "1",
        }
        filters = [f"label=com.docker.compose.{k}={v}" for k, v in labels.items()]
        argv = ["docker", "ps", "--quiet", "--no-trunc", "--filter", "status=running"]
        argv += [arg for f in filters for arg in ("--filter", f)]
        try:
            found = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=LOOKUP_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired):
            return None  # compose's own exec then runs, under the caller's timeout
        ids = found.stdout.split()
        return ids[0] if found.returncode == 0 and len(ids) == 1 else None

    def cli(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        run = subprocess.run(
            self.command(*args),
            env={**os.environ, **env} if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Completed(run.returncode, run.stdout, run.stderr)

    def _checked(self, *args: str) -> str:
        """The stdout of `docker compose ... ARGS`; ComposeError when it fails or cannot run."""
        try:
            done = self.cli(args)
        except OSError as exc:
            raise ComposeError(f"cannot run the docker CLI: {exc}", 127) from None
        if done.rc != 0:
            raise ComposeError(done.stderr, done.rc)
        return done.stdout

    def config_services(self) -> list[str]:
        config = json.loads(self._checked("config", "--format", "json"))
        return sorted(config.get("services") or {})

    def ps(self, service: str) -> list[tuple[str, int | None]]:
        out = self._checked("ps", "--all", "--format", "json", service).strip()
        # one JSON object per line (Compose >= 2.21), a JSON array before
        containers = (
            json.loads(out)
            if out.startswith("[")
            else [json.loads(line) for line in out.splitlines() if line.strip()]
        )
        return [(c.get("State", ""), c.get("ExitCode")) for c in containers]

    def restart(self, service: str, wait_timeout: int) -> None:
        self._checked("restart", service)
        self._checked(
            "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout),
            "--no-recreate", "--no-build", "--pull", "never", "--quiet-pull", service,
        )  # fmt: skip

    def execute(self, service: str, argv: Sequence[str]) -> str:
        return self._checked("exec", "--no-TTY", service, *argv)


def compose_files_key(project_name: str, compose_files: Sequence[str]) -> list[list[Any]]:
    """What the services of the project depend on: each file's path, size and mtime."""
    key: list[list[Any]] = [["project", project_name]]
    for name in compose_files:
        try:
            info = os.stat(name)
        except OSError:
            return []  # a missing file: let `docker compose config` name the problem
        key.append([name, info.st_size, info.st_mtime_ns])
    return key


def compose_services(compose: Compose, params: Mapping[str, Any], cache: Path | None) -> list[str]:
    """The services of the compose project, from `cache` when its files are unchanged.

    `docker compose config` costs a tenth of a second or more per call; an experiment
    loop over an unchanged project asks it once. The cache is written only when given.
    """
    key = compose_files_key(params["project_name"], params["compose_files"])
    if cache is not None and key:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if cached.get("key") == key:
                return list(cached["services"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no cache or a broken one: read the project and write it again
    try:
        services = compose.config_services()
    except ComposeError as exc:
        raise LemError(
            f"compose_files: cannot read {params['compose_files']}: {last_line(exc.stderr)}"
        ) from None
    if cache is not None and key and params["service"] in services:
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write_text(cache, json.dumps({"key": key, "services": services}) + "\n")
    return services


def check_service(compose: Compose, params: Mapping[str, Any], cache: Path | None) -> None:
    """Fail before anything is written when the service is not in the compose project."""
    services = compose_services(compose, params, cache)
    if params["service"] not in services:
        raise LemError(
            f"service: {params['service']!r} is not a service of {params['compose_files']} "
            f"(services: {', '.join(sorted(services)) or 'none'})"
        )


def service_stopped(
    compose: Compose,
    service: str,
    exec_rc: int | None = None,
    settle_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Why the service's container is not running, after a failed exec; None while it runs.

    Asked only after a failure, so that "killed" or "daemon restarted" is said plainly
    instead of the docker CLI's last line alone. An exec killed by SIGKILL (`exec_rc`
    137) ends as its container dies, a moment before Docker marks the container exited:
    a container still said to run is asked again for up to `settle_seconds`.
    """
    deadline = clock() + (settle_seconds if exec_rc == SIGKILL_EXIT_CODE else 0.0)
    while True:
        try:
            states = compose.ps(service)
        except ComposeError as exc:
            return f"the Docker daemon did not answer: {last_line(exc.stderr) or exc.rc}"
        if not any(status == "running" for status, _ in states):
            break
        if clock() >= deadline:
            return None
        sleep(0.5)
    if not states:
        return "its container is gone"
    status, code = states[0]
    killed = " (killed)" if code == SIGKILL_EXIT_CODE else ""
    return f"its container is {status} with exit code {code}{killed}"


def worker_stats(compose: Compose, service: str, cancel: str | None) -> WorkerStatus | None:
    """`lem worker --status [--cancel EXP_ID]` in the service, its JSON (`WorkerStats` of
    contracts/wire.py, read plain); None when the worker does not answer (frozen, gone)
    or the exec cannot be made."""
    argv = ["lem", "worker", "--status", *(["--cancel", cancel] if cancel else [])]
    try:
        probe = compose.cli(["exec", "--no-TTY", service, *argv], timeout=WORKER_PROBE_EXEC_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.rc != 0:
        return None
    try:
        stats = json.loads(last_line(probe.stdout))
    except json.JSONDecodeError:
        return None
    return stats if isinstance(stats, dict) and isinstance(stats.get("pid"), int) else None


def restart_service(compose: Compose, service: str, wait_timeout: int, why: str) -> None:
    """Restart the service and wait until it is healthy and its fresh worker answers."""
    try:
        compose.restart(service, wait_timeout)
    except ComposeError as exc:
        cause = f"restarting service {service!r} {why} failed: {last_line(exc.stderr)}"
        raise ExperimentFailed(cause, exc.rc, exc.stderr) from None
    if wait_for_worker(lambda: worker_stats(compose, service, None), wait_timeout) is None:
        raise ExperimentFailed(
            f"service {service!r} restarted {why}, but its worker did not answer "
            f"within {wait_timeout} s"
        )


def attempt_pids_in(compose: Compose, service: str, exp_id: str) -> list[int]:
    """Pids of processes in the service still running `exp_id` (`docker compose top`);
    AttemptLookupFailed (a LemError: the task fails, nothing started) when top fails."""
    try:
        top = compose.cli(["top", service])
    except OSError as exc:
        return attempt_pids_from_top(127, "", f"cannot run the docker CLI: {exc}", exp_id)
    return attempt_pids_from_top(top.rc, top.stdout, top.stderr, exp_id)
