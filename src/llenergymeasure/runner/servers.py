"""The engines' own OpenAI-compatible servers for server mode (docs/server-mode.md).

Each backend's server is started inside its long-running service, on the container's
loopback only (no port is published: nothing from the network reaches it):

- pytorch: `transformers serve MODEL --continuous-batching` (runs on CPU too);
- vllm: `vllm serve MODEL` with the same engine arguments as the offline path, as flags;
- tensorrt: `trtllm-serve MODEL --backend pytorch|trt --extra_llm_api_options FILE`, the
  offline path's LLM arguments written to that YAML file (the server reads it into LlmArgs).

The command lines are built here as plain lists, so that tests check every flag against the
engines' real signatures (tests/fixtures/engines, tests/unit/test_server_commands.py)
without the engines. Nothing here imports an engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import tensorrt, vllm

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8000
SERVER_NAMES = {
    "pytorch": "transformers serve",
    "vllm": "vllm serve",
    "tensorrt": "trtllm-serve",
}
# vLLM flags whose off state must be said: their engine default is on (prefix caching is
# on by default in vLLM's V1 engine; engines are compared with it off, DESIGN.md).
VLLM_NEGATED_WHEN_FALSE = frozenset({"enable_prefix_caching", "enable_chunked_prefill"})
# Offline-only engine arguments a server takes under another name or not at all: the
# model is the positional argument.
VLLM_POSITIONAL = "model"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def pytorch_command(config: ExperimentConfig, port: int, device: str) -> list[str]:
    """`transformers serve` with continuous batching, preloading the config's model."""
    section = config.pytorch
    command = [
        "transformers",
        "serve",
        config.model.path,
        "--continuous-batching",
        "--device",
        device,
        "--dtype",
        config.precision,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    if config.model.trust_remote_code:
        command.append("--trust-remote-code")
    if section is not None:
        for name in ("cb_num_blocks", "cb_max_batch_tokens", "cb_block_size"):
            value = getattr(section, name, None)
            if value is not None:
                command += [flag(name), str(value)]
        if section.attn_implementation is not None:
            command += ["--attn-implementation", section.attn_implementation]
    return command


def vllm_command(config: ExperimentConfig, port: int) -> list[str]:
    """`vllm serve MODEL` with the offline path's EngineArgs as flags (one source of truth)."""
    args = vllm.engine_args(config)
    command = ["vllm", "serve", str(args.pop(VLLM_POSITIONAL))]
    for name, value in args.items():
        command += vllm_flag(name, value)
    return [*command, "--host", LOOPBACK, "--port", str(port)]


def vllm_flag(name: str, value: Any) -> list[str]:
    if value is None:  # vLLM's default
        return []
    if isinstance(value, bool):
        if value:
            return [flag(name)]
        return ["--no-" + name.replace("_", "-")] if name in VLLM_NEGATED_WHEN_FALSE else []
    return [flag(name), str(value)]


def tensorrt_command(config: ExperimentConfig, port: int, options_file: Path) -> list[str]:
    """`trtllm-serve MODEL` with the offline path's LLM arguments in `options_file`
    (written by `tensorrt_options`); a prebuilt engine is served by the TensorRT backend."""
    args = tensorrt.llm_args(config)
    command = ["trtllm-serve", str(args["model"])]
    if "tokenizer" in args:
        command += ["--tokenizer", str(args["tokenizer"])]
    backend = "trt" if config.tensorrt is not None and config.tensorrt.engine_dir else "pytorch"
    return [
        *command,
        "--backend",
        backend,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--extra_llm_api_options",
        str(options_file),
    ]


def tensorrt_options(config: ExperimentConfig) -> dict[str, Any]:
    """The LlmArgs the options file holds: the offline path's, less what the command names."""
    args = tensorrt.llm_args(config)
    return {k: v for k, v in args.items() if k not in ("model", "tokenizer")}


def server_command(config: ExperimentConfig, port: int, device: str, work_dir: Path) -> list[str]:
    """The command line of `config`'s backend's server; a TensorRT-LLM options file is
    written to `work_dir` (JSON is YAML, so no YAML writer is needed)."""
    if config.backend == "pytorch":
        return pytorch_command(config, port, device)
    if config.backend == "vllm":
        return vllm_command(config, port)
    options = work_dir / "trtllm-serve-options.yml"
    options.write_text(json.dumps(tensorrt_options(config), indent=2))
    return tensorrt_command(config, port, options)


@dataclass
class ServerProcess:
    """A running server: its process, address and log file."""

    command: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    env: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.process = self._spawn(log)
            except FileNotFoundError as exc:
                raise ExperimentError(
                    f"{self.command[0]} is not installed in this image: no server for "
                    "server mode (docs/server-mode.md)"
                ) from exc
        self.started_s = time.monotonic()

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(self.env) if self.env is not None else None,
            start_new_session=True,  # its own group: stopped whole, never our signals
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout_s: float, poll_s: float = 0.5) -> None:
        """Until the server lists its models; a server that exits or stays silent for
        `timeout_s` is an ExperimentError naming its exit and its log's last lines."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ExperimentError(f"{self.command[0]} server exited: {self.cause()}")
            if self.answers():
                return
            time.sleep(poll_s)
        raise ExperimentError(
            f"{self.command[0]} server not ready after {timeout_s:.0f} s: {self.cause()}"
        )

    def answers(self, timeout_s: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=timeout_s) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def cause(self) -> str:
        """Exit status and the log's last lines: why a server is gone or hangs."""
        code = None if self.process is None else self.process.poll()
        status = "still running" if code is None else f"exit status {code}"
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        return f"{status}; last log lines: {' | '.join(tail) or '(none)'}"

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # the server's own session: its worker processes go with it
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):  # gone between the check and now
            os.killpg(self.process.pid, signum)
