"""No two modules of the package import each other, and the config modules import alone.

A module pair that imports both ways works only in one import order (the other
meets a half-initialised module), so each config module is imported first in a
fresh interpreter, and the whole package is checked for such pairs in its source.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest

import llenergymeasure

PACKAGE_DIR = Path(llenergymeasure.__file__).resolve().parent
PACKAGE = "llenergymeasure"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")[: len(importer.split(".")) - node.level + is_package]
    return ".".join([*base, node.module] if node.module else base)


def imported_modules(importer: str) -> set[str]:
    """The package's modules `importer` imports anywhere (in functions too), by name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[importer].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, importer)
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != importer}


def test_no_two_modules_import_each_other() -> None:
    imports = {name: imported_modules(name) for name in MODULES}
    both_ways = [
        (a, b) for a, b in combinations(sorted(MODULES), 2) if b in imports[a] and a in imports[b]
    ]
    assert both_ways == []


def test_the_check_sees_imports_inside_functions_and_relative_ones() -> None:
    assert "llenergymeasure.config.grid" in imported_modules("llenergymeasure.config.loader")
    assert "llenergymeasure.files" in imported_modules("llenergymeasure.campaign.manifest")


@pytest.mark.parametrize(
    "module",
    [
        "llenergymeasure.config.grid",
        "llenergymeasure.config.loader",
        "llenergymeasure.config.messages",
    ],
)
def test_config_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    imported = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert imported.returncode == 0, imported.stderr
