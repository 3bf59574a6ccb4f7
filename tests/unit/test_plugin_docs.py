"""Every module's and plugin's DOCUMENTATION, EXAMPLES and RETURN parse as YAML.

`ansible-doc` shows nothing for a module whose DOCUMENTATION does not parse, and the
tests that check module returns against RETURN read that text too. A plain YAML
scalar cannot hold ": " (lem_experiment's did twice, unnoticed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*REPO.glob("library/*.py"), *REPO.glob("callback_plugins/*.py")])
BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def doc_blocks(path: Path) -> dict[str, str]:
    blocks = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            name = getattr(node.targets[0], "id", "")
            if name in BLOCKS:
                blocks[name] = node.value.value
    return blocks


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_documentation_examples_and_return_parse(path: Path) -> None:
    blocks = doc_blocks(path)

    assert "DOCUMENTATION" in blocks
    for name, text in blocks.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.name} {name} does not parse: {exc}")
