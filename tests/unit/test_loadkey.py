"""The model load key: what a loaded model depends on, and nothing else."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llenergymeasure.config.models import (
    BACKEND_SECTIONS,
    ExperimentConfig,
    PyTorchConfig,
)
from llenergymeasure.runner.loadkey import is_runtime_parameter, load_key, load_spec


def config(**overrides: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "config_name": "base",
        "backend": "pytorch",
        "model": {"path": "/models/tiny"},
        "precision": "float32",
        "pytorch": {"batch_size": 1},
    }
    data.update(overrides)
    return ExperimentConfig.model_validate(data)


def test_key_is_16_hex_digits_and_stable() -> None:
    key = load_key(config())
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert load_key(config()) == key


@pytest.mark.parametrize(
    "overrides",
    [
        {"config_name": "other"},
        {"pytorch": {"batch_size": 8}},
        {"pytorch": {"use_cache": False}},
        {"decoder": {"max_new_tokens": 99, "temperature": 0.7, "seed": 5}},
        {"dataset": {"name": "builtin:long-prompts", "num_prompts": 3}},
        {"measurement": {"warmup_prompts": 0, "min_window_seconds": 1.0}},
    ],
)
def test_run_time_settings_share_the_loaded_model(overrides: dict[str, Any]) -> None:
    assert load_key(config(**overrides)) == load_key(config())


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"path": "/models/other"}},
        {"model": {"path": "/models/tiny", "revision": "abc123"}},
        {"model": {"path": "/models/tiny", "trust_remote_code": True}},
        {"precision": "bfloat16"},
        {"pytorch": {"attn_implementation": "eager"}},
        {"pytorch": {"torch_compile": True}},
        {"backend": "vllm", "pytorch": None},
    ],
)
def test_load_time_settings_change_the_key(overrides: dict[str, Any]) -> None:
    assert load_key(config(**overrides)) != load_key(config())


def test_engine_parameters_of_vllm_are_load_time() -> None:
    base = config(backend="vllm", pytorch=None, vllm={"gpu_memory_utilization": 0.9})
    other = config(backend="vllm", pytorch=None, vllm={"gpu_memory_utilization": 0.5})
    assert load_key(base) != load_key(other)


def test_runtime_marks_come_from_the_models() -> None:
    assert is_runtime_parameter(PyTorchConfig, "batch_size")
    assert is_runtime_parameter(PyTorchConfig, "use_cache")
    assert not is_runtime_parameter(PyTorchConfig, "attn_implementation")
    for backend in ("vllm", "tensorrt"):
        section = BACKEND_SECTIONS[backend]
        assert not [name for name in section.model_fields if is_runtime_parameter(section, name)]


def test_load_spec_lists_what_the_key_hashes() -> None:
    spec = load_spec(config(pytorch={"batch_size": 4, "attn_implementation": "sdpa"}))
    assert spec == {
        "backend": "pytorch",
        "model": {"path": "/models/tiny", "revision": None, "trust_remote_code": False},
        "precision": "float32",
        "parameters": {
            "attn_implementation": "sdpa",
            "torch_compile": False,
            "cb_num_blocks": None,
            "cb_block_size": None,
            "cb_max_batch_tokens": None,
        },
    }
