"""Campaign validation: every rejection names the file, the key path and the bad value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llenergymeasure.config.loader import load_campaign, load_experiment
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.errors import ConfigError

CONFIG: dict[str, Any] = {
    "config_name": "tiny-bs1",
    "backend": "pytorch",
    "model": {"path": "/models/tiny"},
    "pytorch": {"batch_size": 1},
}
CAMPAIGN: dict[str, Any] = {
    "campaign_name": "demo",
    "configs": [CONFIG],
    "execution": {"cycles": 3, "order": "interleaved", "seed": 42},
}


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def campaign_with(tmp_path: Path, edit: dict[str, Any]) -> Path:
    """CAMPAIGN with `edit` applied: dotted keys (``configs.0.pytorch.x``) set nested values."""
    data = copy.deepcopy(CAMPAIGN)
    for dotted, value in edit.items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
    return write_yaml(tmp_path / "campaign.yml", data)


def rejection(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    return str(caught.value)


def test_the_reference_campaign_is_valid(tmp_path: Path) -> None:
    loaded = load_campaign(campaign_with(tmp_path, {}))
    assert [c.config_name for c in loaded.configs] == ["tiny-bs1"]
    assert loaded.campaign.execution.cycles == 3


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"colour": "red"}, "colour: unknown key (value 'red'); allowed keys: campaign_name,"),
        ({"execution.speed": 2}, "execution.speed: unknown key (value 2); allowed keys: cycles,"),
        (
            {"configs.0.pytorch.max_num_seqs": 8},
            "configs[0].pytorch.max_num_seqs: unknown key (value 8); "
            "pytorch accepts: batch_size, attn_implementation, use_cache, torch_compile, "
            "cb_num_blocks, cb_block_size, cb_max_batch_tokens "
            "(max_num_seqs is a vllm parameter)",
        ),
        ({"configs.0.decoder": {"beams": 2}}, "configs[0].decoder.beams: unknown key (value 2)"),
    ],
)
def test_unknown_keys_are_named_with_their_value(
    tmp_path: Path, edit: dict[str, Any], expected: str
) -> None:
    path = campaign_with(tmp_path, edit)
    assert f"{path}: {expected}" in rejection(path)


@pytest.mark.parametrize("cycles", [0, -1])
def test_zero_or_negative_cycles_are_rejected(tmp_path: Path, cycles: int) -> None:
    path = campaign_with(tmp_path, {"execution.cycles": cycles})
    assert rejection(path) == f"{path}: execution.cycles: {cycles} is less than the minimum 1"


def test_a_backend_section_not_matching_backend_is_rejected(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, {"configs.0.vllm": {"max_num_seqs": 8}})
    assert f"{path}: configs[0].vllm: section 'vllm' given, but backend is 'pytorch'" in (
        rejection(path)
    )


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "tiny bs1", "$(x)", "x;rm", ""])
def test_config_names_that_are_not_path_safe_are_rejected(tmp_path: Path, name: str) -> None:
    path = campaign_with(tmp_path, {"configs.0.config_name": name})
    message = rejection(path)
    assert message.startswith(f"{path}: configs[0].config_name: ")
    assert repr(name) in message


@pytest.mark.parametrize("name", ["demo/x", "../demo", "my demo", "$(touch x)"])
def test_campaign_names_that_are_not_path_safe_are_rejected(tmp_path: Path, name: str) -> None:
    path = campaign_with(tmp_path, {"campaign_name": name})
    assert rejection(path).startswith(f"{path}: campaign_name: {name!r}")


def test_every_bad_config_is_reported_at_once(tmp_path: Path) -> None:
    second = {**CONFIG, "config_name": "b", "precision": "float64"}
    path = campaign_with(tmp_path, {"configs": [{**CONFIG, "pytorch": {"batch_size": 0}}, second]})
    lines = rejection(path).splitlines()
    assert lines[0] == f"{path}: configs[0].pytorch.batch_size: 0 is less than the minimum 1"
    assert lines[1].startswith(f"{path}: configs[1].precision: 'float64' is not one of")


def test_duplicate_config_names_are_rejected(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, {"configs": [CONFIG, CONFIG]})
    assert rejection(path) == f"{path}: configs: duplicate config_name tiny-bs1"


def test_configs_or_grid_exactly_one(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, {"configs": []})
    assert "give exactly one of 'configs' (a non-empty list) or 'grid'" in rejection(path)


def test_configs_given_by_path_are_loaded_relative_to_the_campaign(tmp_path: Path) -> None:
    write_yaml(tmp_path / "configs" / "bs1.yml", CONFIG)
    write_yaml(tmp_path / "configs" / "bs4.yml", {**CONFIG, "config_name": "tiny-bs4"})
    path = campaign_with(tmp_path, {"configs": ["configs/bs1.yml", "configs/bs4.yml"]})
    loaded = load_campaign(path)
    assert [c.config_name for c in loaded.configs] == ["tiny-bs1", "tiny-bs4"]
    assert loaded.configs[0] == load_experiment(tmp_path / "configs" / "bs1.yml")


def test_an_error_in_a_config_file_names_that_file(tmp_path: Path) -> None:
    config_file = write_yaml(tmp_path / "configs" / "bad.yml", {**CONFIG, "seed": 1})
    path = campaign_with(tmp_path, {"configs": ["configs/bad.yml"]})
    assert rejection(path).startswith(f"{config_file}: seed: unknown key (value 1)")


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, {"configs": ["configs/none.yml"]})
    assert rejection(path) == f"{path}: configs[0]: config file 'configs/none.yml' not found"


def test_a_grid_campaign_expands_to_its_configs(tmp_path: Path) -> None:
    grid = {"base": CONFIG, "vary": {"pytorch.batch_size": [1, 4]}}
    path = campaign_with(tmp_path, {"configs": None, "grid": grid})
    loaded = load_campaign(path)
    assert [c.pytorch.batch_size for c in loaded.configs if c.pytorch] == [1, 4]


def test_a_grid_campaign_with_an_invalid_combination_is_rejected(tmp_path: Path) -> None:
    base = {**CONFIG, "backend": "vllm", "pytorch": None}
    grid = {"base": base, "vary": {"pytorch.batch_size": [1]}}
    path = campaign_with(tmp_path, {"configs": None, "grid": grid})
    assert rejection(path) == (
        f"{path}: grid: backend=vllm pytorch.batch_size=1: "
        "pytorch.batch_size does not apply to backend=vllm"
    )


def test_a_grid_campaign_above_max_configs_is_refused(tmp_path: Path) -> None:
    grid = {"base": CONFIG, "vary": {"pytorch.batch_size": [1, 2, 3], "precision": ["float16"]}}
    path = campaign_with(tmp_path, {"configs": None, "grid": grid, "max_configs": 2})
    assert rejection(path).startswith(f"{path}: grid.vary: 3 combinations, more than max_configs=2")


def test_warmup_override_reaches_every_config(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, {"execution.warmup_prompts": 0})
    assert [c.measurement.warmup_prompts for c in load_campaign(path).configs] == [0]


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("campaign_name: [", encoding="utf-8")
    assert rejection(broken).startswith(f"{broken}: not valid YAML")
    listed = write_yaml(tmp_path / "list.yml", [1, 2])
    assert rejection(listed) == f"{listed}: expected a mapping at the top level"


TENSORRT_CONFIG = {**CONFIG, "backend": "tensorrt", "pytorch": None, "precision": "float16"}


def test_tensorrt_refuses_float32_naming_the_key(tmp_path: Path) -> None:
    path = campaign_with(tmp_path, {"configs": [{**TENSORRT_CONFIG, "precision": "float32"}]})
    assert rejection(path) == (
        f"{path}: configs[0].precision: 'float32' is not supported by backend 'tensorrt': "
        "TensorRT-LLM's PyTorch flow runs float16 or bfloat16; set one of them"
    )


def test_tensorrt_refuses_on_the_fly_quantization_naming_the_key(tmp_path: Path) -> None:
    config = {**TENSORRT_CONFIG, "tensorrt": {"quantization": "FP8"}}
    message = rejection(campaign_with(tmp_path, {"configs": [config]}))
    assert "configs[0].tensorrt.quantization: 'FP8' is not supported: TensorRT-LLM's " in message
    assert "does not quantize on the fly" in message


def test_float32_stays_valid_for_the_other_backends(tmp_path: Path) -> None:
    vllm_config = {**CONFIG, "config_name": "v", "backend": "vllm", "pytorch": None}
    path = campaign_with(tmp_path, {"configs": [CONFIG, {**vllm_config, "precision": "float32"}]})
    assert [c.precision for c in load_campaign(path).configs] == ["float32", "float32"]


@pytest.mark.parametrize(
    ("backend", "key"), [("vllm", "enable_prefix_caching"), ("tensorrt", "enable_block_reuse")]
)
def test_prefix_caching_is_off_by_default_and_in_the_resolved_config(
    tmp_path: Path, backend: str, key: str
) -> None:
    config = {**TENSORRT_CONFIG, "backend": backend}
    path = campaign_with(tmp_path, {"configs": [config]})
    (loaded,) = load_campaign(path).configs
    assert loaded.model_dump(mode="json")[backend][key] is False  # what result.config holds
    on = {**config, backend: {key: True}}
    (loaded,) = load_campaign(campaign_with(tmp_path, {"configs": [on]})).configs
    assert getattr(loaded.backend_section(), key) is True


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        ({"sm_clock_mhz": 0}, "configs[0].gpu.sm_clock_mhz"),
        ({"power_limit_w": "300"}, "configs[0].gpu.power_limit_w"),
        ({"core_clock": 900}, "configs[0].gpu.core_clock: unknown key (value 900)"),
    ],
)
def test_bad_gpu_knobs_are_named_with_key_and_value(
    tmp_path: Path, gpu: dict[str, Any], expected: str
) -> None:
    message = rejection(campaign_with(tmp_path, {"configs.0.gpu": gpu}))
    assert expected in message
    assert repr(next(iter(gpu.values()))) in message or str(next(iter(gpu.values()))) in message


def test_gpu_knobs_can_be_varied_in_a_grid(tmp_path: Path) -> None:
    data = {
        "campaign_name": "sweep",
        "grid": {"base": CONFIG, "vary": {"gpu.sm_clock_mhz": [900, 1400, None]}},
    }
    loaded = load_campaign(write_yaml(tmp_path / "c.yml", data))
    clocks = [c.gpu.sm_clock_mhz if c.gpu else None for c in loaded.configs]
    assert sorted(clocks, key=str) == sorted([900, 1400, None], key=str)


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ({"mode": "server", "request_rate": 0}, "request_rate"),
        ({"mode": "server", "max_concurrency": 0}, "max_concurrency"),
        ({"mode": "server", "request_rate": 1.0, "max_concurrency": 2}, "exactly one of"),
        ({"request_rate": 1.0}, "only for load.mode 'server'"),
        (
            {"mode": "server", "max_concurrency": 2, "num_requests": 5, "warmup_requests": 5},
            "above",
        ),
        ({"mode": "server", "request_rate": 2.0, "slo": {"ttft_ms": 0, "itl_ms": 1}}, "ttft_ms"),
    ],
)
def test_the_load_section_refuses_bad_values_naming_the_key(
    load: dict[str, object], message: str
) -> None:
    config = {
        "config_name": "a",
        "backend": "pytorch",
        "model": {"path": "/models/tiny"},
        "load": load,
    }
    with pytest.raises(ValidationError) as raised:
        ExperimentConfig.model_validate(config)
    text = str(raised.value)
    assert "load" in text and message in text, text


@pytest.mark.parametrize("backend", ["pytorch", "vllm", "tensorrt"])
def test_a_server_mode_config_validates_on_every_backend(backend: str) -> None:
    # Every image carries its engine's server and GuideLLM (docker/Dockerfile.*).
    config = ExperimentConfig.model_validate(
        {
            "config_name": "a",
            "backend": backend,
            "model": {"path": "/models/tiny"},
            "precision": "bfloat16",
            "load": {"mode": "server", "request_rate": 2.0, "slo": {"ttft_ms": 500, "itl_ms": 100}},
        }
    )
    assert (config.load.mode, config.load.request_rate) == ("server", 2.0)


def test_an_offline_load_section_is_the_default() -> None:
    config = ExperimentConfig.model_validate(
        {"config_name": "a", "backend": "pytorch", "model": {"path": "/models/tiny"}}
    )
    assert config.load.mode == "offline" and config.load.request_rate is None
