"""Prompt sets: built-in sets shipped in the package, JSONL and text files, cycling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llenergymeasure.config.models import DatasetConfig
from llenergymeasure.errors import ConfigError
from llenergymeasure.runner.prompts import (
    builtin_prompt_sets,
    cycle_prompts,
    load_prompts,
    read_prompt_file,
    read_prompt_set,
)


def test_package_ships_short_and_long_prompt_sets_of_at_least_50_prompts() -> None:
    assert {"short-prompts", "long-prompts"} <= set(builtin_prompt_sets())
    short = read_prompt_set("builtin:short-prompts")
    long = read_prompt_set("builtin:long-prompts")
    assert len(short) >= 50 and len(long) >= 50
    assert len(set(short)) == len(short) and len(set(long)) == len(long)
    assert _mean_words(long) > 3 * _mean_words(short)


def _mean_words(prompts: list[str]) -> float:
    return sum(len(prompt.split()) for prompt in prompts) / len(prompts)


def test_num_prompts_below_the_set_size_takes_the_first_ones() -> None:
    prompts = load_prompts(DatasetConfig(name="builtin:short-prompts", num_prompts=3))
    assert prompts == read_prompt_set("builtin:short-prompts")[:3]


def test_num_prompts_above_the_set_size_cycles_through_the_set() -> None:
    full = read_prompt_set("builtin:long-prompts")
    prompts = load_prompts(DatasetConfig(name="builtin:long-prompts", num_prompts=len(full) + 2))
    assert prompts == [*full, full[0], full[1]]


def test_cycle_prompts_repeats_in_order() -> None:
    assert cycle_prompts(["a", "b"], 5) == ["a", "b", "a", "b", "a"]


def test_unknown_builtin_set_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown built-in prompt set 'builtin:nope'") as err:
        load_prompts(DatasetConfig(name="builtin:nope"))
    assert "builtin:short-prompts" in str(err.value)


def test_jsonl_file_reads_the_prompt_field_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    lines = [json.dumps({"prompt": "first", "id": 1}), "", json.dumps({"prompt": "second"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_prompt_file(path) == ["first", "second"]
    assert load_prompts(DatasetConfig(name=str(path), num_prompts=3)) == [
        "first",
        "second",
        "first",
    ]


def test_text_file_has_one_prompt_per_line(tmp_path: Path) -> None:
    path = tmp_path / "set.txt"
    path.write_text("What is a watt?\n\n  Explain a joule.  \n", encoding="utf-8")
    assert read_prompt_file(path) == ["What is a watt?", "Explain a joule."]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"text": "x"}', "expected an object with a 'prompt' field"),
        ('["prompt"]', "expected an object with a 'prompt' field"),
        ('{"prompt": 3}', "'prompt' must be a non-empty string, got 3"),
        ('{"prompt": "  "}', "'prompt' must be a non-empty string"),
    ],
)
def test_bad_jsonl_line_names_the_file_and_the_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_prompt_file(path)
    assert str(err.value).startswith(f"{path}: line 3: ")
    assert problem in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(ConfigError, match=f"{path}: prompt file not found"):
        load_prompts(DatasetConfig(name=str(path)))


def test_file_without_prompts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{path}: no prompts in the file"):
        read_prompt_file(path)
