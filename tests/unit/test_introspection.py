"""Valid parameters per backend come from the pydantic models, not from a list."""

from __future__ import annotations

import pytest

from llenergymeasure.config import introspection
from llenergymeasure.config.models import (
    CampaignConfig,
    DecoderConfig,
    ExperimentConfig,
    PyTorchConfig,
    VLLMConfig,
)


def test_known_keys_hold_sections_and_leaves() -> None:
    assert introspection.is_known_key("decoder")
    assert introspection.is_known_key("decoder.top_p")
    assert introspection.is_known_key("vllm.max_num_seqs")
    assert not introspection.is_known_key("vllm.batch_size")
    assert not introspection.is_known_key("decoder.top_p.x")


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        ("pytorch.batch_size", "pytorch"),
        ("vllm", "vllm"),
        ("tensorrt.quantization", "tensorrt"),
        ("decoder.temperature", None),
        ("backend", None),
    ],
)
def test_backend_of_names_the_owning_backend(key: str, owner: str | None) -> None:
    assert introspection.backend_of(key) == owner


def test_nested_model_unwraps_optional_sections() -> None:
    assert introspection.nested_model(VLLMConfig | None) is VLLMConfig
    assert introspection.nested_model(DecoderConfig) is DecoderConfig
    assert introspection.nested_model(int | None) is None
    assert introspection.nested_model(str) is None


def test_submodel_at_follows_fields_and_skips_list_indices() -> None:
    assert introspection.submodel_at(ExperimentConfig, ("pytorch",)) is PyTorchConfig
    assert introspection.submodel_at(ExperimentConfig, (0, "decoder")) is DecoderConfig
    assert introspection.submodel_at(ExperimentConfig, ("precision",)) is None
    assert introspection.submodel_at(ExperimentConfig, ("nothing",)) is None


def test_backends_with_parameter() -> None:
    assert introspection.backends_with_parameter("tensor_parallel_size") == ["vllm", "tensorrt"]
    assert introspection.backends_with_parameter("tensor_parallel_size", excluding="vllm") == [
        "tensorrt"
    ]
    assert introspection.backends_with_parameter("batch_size") == ["pytorch"]


def test_unknown_key_hint_in_a_backend_section_lists_that_backend() -> None:
    hint = introspection.unknown_key_hint(ExperimentConfig, ("pytorch", "max_num_seqs"))
    assert hint.startswith("pytorch accepts: batch_size, ")
    assert "max_num_seqs is a vllm parameter" in hint


def test_unknown_key_hint_elsewhere_lists_allowed_keys() -> None:
    hint = introspection.unknown_key_hint(CampaignConfig, ("execution", "cycle"))
    assert hint.startswith("allowed keys: cycles, order, seed")
    assert introspection.unknown_key_hint(ExperimentConfig, ("precision", "x")) == ""
