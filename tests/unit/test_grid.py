"""Grid expansion: backend-specific keys, validity, naming, and the max-configs guard."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from llenergymeasure.config import grid as grid_module
from llenergymeasure.config.grid import count_combinations, expand_grid, set_dotted
from llenergymeasure.config.models import SafeName
from llenergymeasure.errors import ConfigError

BASE: dict[str, Any] = {
    "config_name": "llama",
    "backend": "pytorch",
    "model": {"path": "/models/llama"},
}


def names(expansion: grid_module.GridExpansion) -> list[str]:
    return [config.config_name for config in expansion.valid]


def test_varying_backend_with_backend_specific_keys_gives_only_valid_configs() -> None:
    vary = {
        "backend": ["pytorch", "vllm", "tensorrt"],
        "pytorch.batch_size": [1, 8],
        "vllm.max_num_seqs": [16, 64, 256],
        "precision": ["float16", "bfloat16"],
    }
    expansion = expand_grid(BASE, vary)
    assert expansion.invalid == []
    # pytorch: 2 batch sizes, vllm: 3 max_num_seqs, tensorrt: none of them; x 2 precisions
    assert expansion.counts_by_backend() == {"pytorch": (4, 0), "tensorrt": (2, 0), "vllm": (6, 0)}
    for config in expansion.valid:
        sections = {b for b in ("pytorch", "vllm", "tensorrt") if getattr(config, b) is not None}
        assert sections == {config.backend}
    seqs = sorted(c.vllm.max_num_seqs for c in expansion.valid if c.vllm is not None)
    assert seqs == [16, 16, 64, 64, 256, 256]


def test_backend_specific_keys_create_no_duplicate_configs() -> None:
    vary = {"backend": ["pytorch", "vllm"], "pytorch.batch_size": [1, 8], "vllm.max_num_seqs": [4]}
    expansion = expand_grid(BASE, vary)
    dumps = [c.model_dump_json(exclude={"config_name"}) for c in expansion.valid]
    assert len(dumps) == len(set(dumps)) == 3
    assert len(set(names(expansion))) == 3


def test_base_sections_of_varied_backends_apply_to_their_own_backend_only() -> None:
    base = {**BASE, "pytorch": {"batch_size": 2}, "vllm": {"gpu_memory_utilization": 0.5}}
    expansion = expand_grid(base, {"backend": ["pytorch", "vllm"]})
    by_backend = {config.backend: config for config in expansion.valid}
    assert by_backend["pytorch"].pytorch is not None
    assert by_backend["pytorch"].pytorch.batch_size == 2
    assert by_backend["vllm"].vllm is not None
    assert by_backend["vllm"].vllm.gpu_memory_utilization == 0.5


def test_a_key_of_a_backend_the_grid_does_not_use_makes_combinations_invalid() -> None:
    base = {**BASE, "backend": "vllm"}
    expansion = expand_grid(base, {"pytorch.batch_size": [1, 4], "precision": ["float16"]})
    assert expansion.valid == []
    assert expansion.invalid == [
        (
            {"backend": "vllm", "pytorch.batch_size": 1, "precision": "float16"},
            "pytorch.batch_size does not apply to backend=vllm",
        ),
        (
            {"backend": "vllm", "pytorch.batch_size": 4, "precision": "float16"},
            "pytorch.batch_size does not apply to backend=vllm",
        ),
    ]
    assert expansion.counts_by_backend() == {"vllm": (0, 2)}


def test_an_out_of_range_value_is_an_invalid_combination_naming_the_key() -> None:
    base = {**BASE, "backend": "vllm"}
    expansion = expand_grid(base, {"vllm.gpu_memory_utilization": [0.5, 1.5]})
    assert [c.vllm.gpu_memory_utilization for c in expansion.valid if c.vllm] == [0.5]
    [(combo, reason)] = expansion.invalid
    assert combo == {"backend": "vllm", "vllm.gpu_memory_utilization": 1.5}
    assert reason == "vllm.gpu_memory_utilization: 1.5 is more than the maximum 1.0"


def test_an_invalid_backend_value_is_reported_per_combination() -> None:
    expansion = expand_grid(BASE, {"backend": ["pytorch", "jax"]})
    assert names(expansion) == ["llama--pytorch"]
    [(combo, reason)] = expansion.invalid
    assert combo == {"backend": "jax"}
    assert reason.startswith("backend: 'jax' is not one of")


def test_dotted_keys_set_nested_values_and_keep_the_rest_of_the_base() -> None:
    base = {**BASE, "decoder": {"max_new_tokens": 64}}
    expansion = expand_grid(base, {"decoder.temperature": [0.0, 0.7], "model.path": ["/m/a"]})
    assert [c.decoder.temperature for c in expansion.valid] == [0.0, 0.7]
    assert {c.decoder.max_new_tokens for c in expansion.valid} == {64}
    assert {c.model.path for c in expansion.valid} == {"/m/a"}


def test_set_dotted_creates_and_replaces_intermediate_mappings() -> None:
    data: dict[str, Any] = {"pytorch": None}
    set_dotted(data, "pytorch.batch_size", 4)
    set_dotted(data, "decoder.top_k", 5)
    assert data == {"pytorch": {"batch_size": 4}, "decoder": {"top_k": 5}}


def test_names_carry_the_varied_values_and_skip_single_values() -> None:
    vary = {"backend": ["pytorch", "vllm"], "pytorch.batch_size": [1, 8], "precision": ["float16"]}
    assert names(expand_grid(BASE, vary)) == [
        "llama--pytorch--batch_size-1",
        "llama--pytorch--batch_size-8",
        "llama--vllm",
    ]


def test_names_are_path_safe_and_unique_when_values_collide_after_sanitising() -> None:
    expansion = expand_grid(BASE, {"model.path": ["/m/a b", "/m/a..b", "/m/a-b"]})
    generated = names(expansion)
    assert len(set(generated)) == 3
    for name in generated:
        assert "/" not in name and ".." not in name and " " not in name


def test_very_long_names_are_shortened_and_stay_valid() -> None:
    paths = [f"/models/{'x' * 200}-{i}" for i in range(2)]
    generated = names(expand_grid(BASE, {"model.path": paths}))
    assert len(set(generated)) == 2
    assert all(len(name) <= 128 for name in generated)


def test_a_base_without_a_name_is_named_grid() -> None:
    base = {key: value for key, value in BASE.items() if key != "config_name"}
    assert names(expand_grid(base, {"pytorch.batch_size": [1, 2]}))[0] == "grid--batch_size-1"


def test_the_guard_refuses_before_building_any_combination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_build(*args: Any) -> None:
        raise AssertionError("a combination was built before the guard")

    monkeypatch.setattr(grid_module, "_materialise", must_not_build)
    vary = {f"decoder.{k}": list(range(1, 11)) for k in ("max_new_tokens", "top_k", "seed")}
    with pytest.raises(ConfigError) as caught:
        expand_grid(BASE, vary, max_configs=999, source="base.yml")
    assert str(caught.value) == (
        "base.yml: vary: 1000 combinations, more than max_configs=999; "
        "vary fewer values or raise the limit (--max-configs / max_configs)"
    )


def test_the_guard_counts_backend_specific_keys_per_backend() -> None:
    vary = {
        "backend": ["pytorch", "vllm"],
        "pytorch.batch_size": [1, 2, 4],
        "vllm.max_num_seqs": [8],
    }
    assert count_combinations(vary, vary["backend"]) == 4
    assert len(expand_grid(BASE, vary, max_configs=4).valid) == 4
    with pytest.raises(ConfigError, match="4 combinations, more than max_configs=3"):
        expand_grid(BASE, vary, max_configs=3)


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ({"pytorch.batchsize": [1]}, "vary.pytorch.batchsize: unknown key; pytorch accepts:"),
        ({"decoder.beams": [1]}, "vary.decoder.beams: unknown key; allowed keys: max_new_tokens"),
        ({"config_name": ["a", "b"]}, "vary.config_name: cannot be varied"),
        ({"precision": []}, "vary.precision: expected a non-empty list of values, got []"),
        ({"precision": "float16"}, "vary.precision: expected a non-empty list of values"),
        ({"pytorch.batch_size": [1, 2, 1]}, "vary.pytorch.batch_size: value 1 is listed more"),
        ({}, "vary: expected a non-empty mapping"),
    ],
)
def test_bad_vary_specs_are_errors_naming_the_key(vary: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        expand_grid(BASE, vary, source="c.yml", key_prefix="grid.")
    assert str(caught.value).startswith(f"c.yml: grid.{expected}")


def test_true_and_1_are_distinct_values() -> None:
    # not refused as a repeat; 1 is then its own (invalid: strict types) combination
    expansion = expand_grid(BASE, {"pytorch.use_cache": [True, 1]})
    assert len(expansion.valid) == 1
    assert [combo["pytorch.use_cache"] for combo, _ in expansion.invalid] == [1]


def test_generated_names_satisfy_the_safe_name_rule() -> None:
    adapter = TypeAdapter(SafeName)
    expansion = expand_grid(BASE, {"model.path": ["hub/org:model@v1", "../up"]})
    for name in names(expansion):
        assert adapter.validate_python(name) == name
