"""Role metadata: an argument spec for every entry point, platforms the package runs on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path.parent.parent for path in REPO.glob("roles/*/meta/main.yml"))

# The python3 each release ships as its system Python (what the host's venv is made from).
SYSTEM_PYTHON = {
    ("Debian", "bullseye"): (3, 9),
    ("Debian", "bookworm"): (3, 11),
    ("Debian", "trixie"): (3, 13),
    ("Ubuntu", "focal"): (3, 8),
    ("Ubuntu", "jammy"): (3, 10),
    ("Ubuntu", "noble"): (3, 12),
}


def entry_points() -> set[tuple[str, str]]:
    """(role, tasks file) pairs the playbooks and roles enter: main, and every tasks_from."""
    found = {(role.name, "main") for role in ROLES}
    pattern = re.compile(r"name:\s*(\w+)\s*\n\s*tasks_from:\s*(\w+)")
    for path in [*REPO.glob("playbooks/*.yml"), *REPO.glob("roles/*/tasks/*.yml")]:
        found.update(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_the_entry_points_are_found() -> None:
    assert {("lem_services", "down"), ("lem_services", "finish")} <= entry_points()


@pytest.mark.parametrize(("role", "entry"), sorted(entry_points()))
def test_every_entry_point_has_an_argument_spec(role: str, entry: str) -> None:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    spec = specs["argument_specs"].get(entry)
    assert spec is not None, f"roles/{role}: no argument spec for tasks_from={entry}"
    assert spec["short_description"] and spec["options"]


def required_python() -> tuple[int, int]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert found is not None, "requires-python is not of the form >=X.Y"
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_platforms_have_a_python_the_package_runs_on(role: Path) -> None:
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text(encoding="utf-8"))
    for platform in meta["galaxy_info"]["platforms"]:
        for version in platform["versions"]:
            python = SYSTEM_PYTHON.get((platform["name"], version))
            assert python is not None, f"{platform['name']} {version}: add its python3 here"
            assert python >= required_python(), f"{platform['name']} {version}: python3 {python}"
