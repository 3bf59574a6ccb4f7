"""Prompt sets: built-in ones shipped in the package, or a user's JSONL / text file.

`dataset.name` is `builtin:NAME` or a file path; `dataset.num_prompts` prompts are
taken from the set in order, cycling through it when it is shorter.
"""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

from llenergymeasure.config.models import DatasetConfig
from llenergymeasure.errors import ConfigError

BUILTIN_PREFIX = "builtin:"
PROMPT_FIELD = "prompt"


def builtin_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped in the package, e.g. 'short-prompts'."""
    folder = resources.files("llenergymeasure").joinpath("data", "prompts")
    return sorted(item.name.removesuffix(".txt") for item in folder.iterdir() if item.is_file())


def load_prompts(dataset: DatasetConfig) -> list[str]:
    """Exactly `dataset.num_prompts` prompts, cycling through the set when it is shorter."""
    prompts = read_prompt_set(dataset.name)
    return cycle_prompts(prompts, dataset.num_prompts)


def cycle_prompts(prompts: list[str], count: int) -> list[str]:
    """The first `count` prompts of `prompts` repeated end to end."""
    if not prompts:
        raise ValueError("cannot cycle an empty prompt list")
    return list(itertools.islice(itertools.cycle(prompts), count))


def read_prompt_set(name: str) -> list[str]:
    """All prompts of a built-in set (`builtin:NAME`) or of a file."""
    if name.startswith(BUILTIN_PREFIX):
        return _read_builtin(name.removeprefix(BUILTIN_PREFIX))
    return read_prompt_file(Path(name))


def read_prompt_file(path: Path) -> list[str]:
    """`.jsonl`: one JSON object per line with a `prompt` string; otherwise one prompt per line.

    Blank lines are skipped. Errors name the file and the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: prompt file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read prompt file: {exc}") from None
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if path.suffix == ".jsonl":
        prompts = [_parse_jsonl_line(path, n, line) for n, line in numbered]
    else:
        prompts = [line.strip() for _, line in numbered]
    if not prompts:
        raise ConfigError(f"{path}: no prompts in the file")
    return prompts


def _read_builtin(set_name: str) -> list[str]:
    available = builtin_prompt_sets()
    if set_name not in available:
        raise ConfigError(
            f"dataset.name: unknown built-in prompt set {BUILTIN_PREFIX + set_name!r} "
            f"(available: {', '.join(BUILTIN_PREFIX + s for s in available)})"
        )
    resource = resources.files("llenergymeasure").joinpath("data", "prompts", f"{set_name}.txt")
    text = resource.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _parse_jsonl_line(path: Path, line_number: int, line: str) -> str:
    where = f"{path}: line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc.msg}") from None
    if not isinstance(record, dict) or PROMPT_FIELD not in record:
        raise ConfigError(f"{where}: expected an object with a {PROMPT_FIELD!r} field")
    prompt = record[PROMPT_FIELD]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{where}: {PROMPT_FIELD!r} must be a non-empty string, got {prompt!r}")
    return prompt
