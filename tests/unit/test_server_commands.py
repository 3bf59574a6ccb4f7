"""The servers' command lines (runner/servers.py) use only flags the real engines have.

vLLM: every engine flag of `vllm serve` is an EngineArgs field of both pinned versions'
wheels (tests/fixtures/engines, the offline path's fixtures); TensorRT-LLM: the options
file holds only TorchLlmArgs/TrtLlmArgs fields; transformers: every flag is a parameter
of the installed `transformers serve` command (the image's transformers, the same lock).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from fixtures.engine_contracts import every_key_config, fixture, names

from llenergymeasure.config.models import VLLM_KEYS_GONE_IN, VLLM_VERSIONS
from llenergymeasure.runner import servers

ROOT = Path(__file__).resolve().parents[2]
TENSORRT_FIXTURE = "tensorrt_llm-1.0.0rc4.json"
# Flags of `vllm serve`'s frontend (FrontendArgs: vllm/entrypoints/openai/cli_args.py in
# both versions), not EngineArgs fields.
VLLM_FRONTEND_FLAGS = {"host", "port"}
# trtllm-serve's click options the command uses (tensorrt_llm/commands/serve.py, 1.0).
TRTLLM_SERVE_OPTIONS = {"tokenizer", "backend", "host", "port", "extra_llm_api_options"}


def flags(command: list[str]) -> list[str]:
    """Long option names of `command`, without dashes and a `no-` negation, underscored."""
    out = []
    for word in command:
        if word.startswith("--"):
            name = word[2:]
            name = name[3:] if name.startswith("no-") else name
            out.append(name.replace("-", "_"))
    return out


EVERY_VLLM_KEY = {
    "max_num_seqs": 8,
    "max_num_batched_tokens": 4096,
    "max_model_len": 2048,
    "enable_chunked_prefill": False,
    "enforce_eager": True,
    "quantization": "fp8",
    "block_size": 16,
}


@pytest.mark.parametrize("version", VLLM_VERSIONS)
def test_vllm_serve_flags_are_engine_args_of_both_versions(version: str) -> None:
    command = servers.vllm_command(
        every_key_config("vllm", {**EVERY_VLLM_KEY, "version": version}), 8123
    )
    assert command[:3] == ["vllm", "serve", "/models/m"]
    engine_args = names(fixture(f"vllm-{version}.json"), "engine_args")
    unknown = set(flags(command)) - engine_args - VLLM_FRONTEND_FLAGS
    assert unknown == set(VLLM_KEYS_GONE_IN.get(version, set())) & set(flags(command))
    # loopback only, and prefix caching said to be off (vLLM's default is on)
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    assert "--no-enable-prefix-caching" in command and "--no-enable-chunked-prefill" in command
    assert command[command.index("--dtype") + 1] == "bfloat16"
    assert "--trust-remote-code" in command and "--enforce-eager" in command


def test_vllm_serve_drops_an_unset_false_flag_it_cannot_negate() -> None:
    # --disable-log-stats is store_true in vLLM: `--no-disable-log-stats` does not exist
    command = servers.vllm_command(every_key_config("vllm", {}), 8000)
    assert not any("disable-log-stats" in word for word in command)


@pytest.mark.parametrize("engine_dir", [None, "/engines/m"])
def test_trtllm_serve_options_are_llm_args_fields(engine_dir: str | None, tmp_path: Path) -> None:
    section = {"tensor_parallel_size": 2, "max_batch_size": 8, "enable_block_reuse": False}
    if engine_dir:
        section["engine_dir"] = engine_dir
    cfg = every_key_config("tensorrt", section)
    command = servers.server_command(cfg, 8001, "cuda", tmp_path)
    options = json.loads((tmp_path / "trtllm-serve-options.yml").read_text())
    llm_class = "trt_llm_args" if engine_dir else "torch_llm_args"
    assert set(options) <= names(fixture(TENSORRT_FIXTURE), llm_class)
    assert set(options["kv_cache_config"]) <= names(fixture(TENSORRT_FIXTURE), "kv_cache_config")
    assert set(flags(command)) <= TRTLLM_SERVE_OPTIONS
    assert command[1] == (engine_dir or "/models/m")
    assert command[command.index("--backend") + 1] == ("trt" if engine_dir else "pytorch")
    assert options["tensor_parallel_size"] == 2 and "model" not in options


def test_transformers_serve_flags_are_parameters_of_the_installed_command() -> None:
    serve = pytest.importorskip("transformers.cli.serve")
    parameters = set(inspect.signature(serve.Serve.__init__).parameters)
    section = {"cb_num_blocks": 64, "cb_max_batch_tokens": 256, "attn_implementation": "sdpa"}
    cfg = every_key_config("pytorch", section, precision="float32")
    command = servers.pytorch_command(cfg, 8002, "cpu")
    assert command[:3] == ["transformers", "serve", "/models/m"]  # force_model, positional
    assert set(flags(command)) <= parameters
    assert "--continuous-batching" in command
    assert command[command.index("--cb-num-blocks") + 1] == "64"
    assert command[command.index("--host") + 1] == servers.LOOPBACK


def test_every_backend_has_a_server() -> None:
    assert set(servers.SERVER_NAMES) == {"pytorch", "vllm", "tensorrt"}
