"""The tiny test model: deterministic, offline, loadable by the Auto classes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.runner.tiny_model import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    TinyModelSpec,
    create_tiny_model,
)


def file_digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
    }


def test_same_seed_writes_identical_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = create_tiny_model(tmp_path / "again").path
    assert file_digests(again) == file_digests(tiny_model_dir)


def test_other_seed_changes_the_weights_not_the_tokenizer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    other = file_digests(create_tiny_model(tmp_path / "seed1", TinyModelSpec(seed=1)).path)
    first = file_digests(tiny_model_dir)
    assert other["model.safetensors"] != first["model.safetensors"]
    assert other["tokenizer.json"] == first["tokenizer.json"]


def test_auto_classes_load_it_with_special_tokens(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        BOS_TOKEN,
        EOS_TOKEN,
        PAD_TOKEN,
    )
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    ids = tokenizer("Measure the energy of every token.").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Measure the energy of every token."


def test_tokenizer_learned_words_from_the_shipped_corpus(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # frequent corpus words are single tokens; a byte-level fallback would need one per byte
    assert len(tokenizer.tokenize(" energy measurement")) <= 3
    assert len(tokenizer.tokenize("zqxjv")) >= 3


def test_spec_sizes_shape_the_model(tmp_path: Path) -> None:
    spec = TinyModelSpec(vocab_size=512, hidden_size=64, layers=1)
    info = create_tiny_model(tmp_path / "small", spec)
    model = AutoModelForCausalLM.from_pretrained(info.path)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 1)
    assert info.vocab_size == model.config.vocab_size <= 512
    assert info.parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 100}, "hidden_size must be a multiple of 32, got 100"),
        ({"vocab_size": 100}, "vocab_size must be at least 300, got 100"),
        ({"layers": 0}, "layers must be at least 1, got 0"),
    ],
)
def test_bad_spec_is_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TinyModelSpec(**kwargs)


def test_lem_model_tiny_writes_a_model_directory(tmp_path: Path) -> None:
    out = tmp_path / "cli-model"
    args = ["model", "tiny", "--out", str(out), "--hidden-size", "64", "--vocab-size", "400"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"written to {out}" in result.output
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(file_digests(out))


def test_lem_model_tiny_rejects_a_bad_size_with_an_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["model", "tiny", "--out", str(tmp_path), "--hidden-size", "40"]
    )
    assert result.exit_code == 2
    assert "error: hidden_size must be a multiple of 32, got 40" in result.output
