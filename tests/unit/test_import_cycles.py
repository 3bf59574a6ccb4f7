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
    assert "llenergymeasure.files" in imported_modules("llenergymeasure.host.manifest")


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


# The layers of docs/architecture.md ("Layers and sides"), lowest first. A module imports
# only from its own package or from a lower layer; the packages of one layer are
# independent of each other (the host, container and controller sides meet only in the
# layers below them). `llenergymeasure` is the package's __init__ (its version).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("llenergymeasure", "errors", "files", "lease"),
    ("contracts",),
    ("config", "stats", "measure"),
    ("host", "runner"),
    ("dispatch", "controller", "results"),
    ("commands", "cli", "gpucheck"),
)
LAYER_OF = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """`llenergymeasure.dispatch.attempt` -> `dispatch`; the package root -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_imports() -> dict[str, set[str]]:
    """Each package's imports of the other packages, from every module's source."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        found = {package_of(name) for name in imported_modules(module)}
        graph.setdefault(package_of(module), set()).update(found - {package_of(module)})
    return graph


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of the package graph, each once, as the path that closes it."""
    cycles: list[list[str]] = []

    def visit(path: list[str]) -> None:
        for following in sorted(graph.get(path[-1], ())):
            if following == path[0]:
                cycles.append(path)
            elif following not in path and following > path[0]:
                visit([*path, following])

    for start in sorted(graph):
        visit([start])
    return cycles


def test_no_package_cycle() -> None:
    assert package_cycles(package_imports()) == []


def test_the_cycle_check_finds_a_cycle_of_three() -> None:
    assert package_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_has_a_layer() -> None:
    assert set(package_imports()) - set(LAYER_OF) == set()


def test_imports_go_down_the_layers_only() -> None:
    upward = sorted(
        f"{importer} -> {name}"
        for importer in MODULES
        for name in imported_modules(importer)
        if package_of(name) != package_of(importer)
        and LAYER_OF.get(package_of(name), 0) >= LAYER_OF.get(package_of(importer), 0)
    )
    assert upward == []
