#!/usr/bin/env python3
"""Check that the installed Ansible collections satisfy collections/requirements.yml.

    check_collections.py [REQUIREMENTS]

Asks `ansible-galaxy collection list --format json` (the one beside this Python, so
the venv's) and compares versions the way ansible-galaxy does. Prints what is missing
or too old and how to fix it; exit status 1 then. Galaxy itself is never contacted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements

REQUIREMENTS = Path(__file__).resolve().parents[1] / "collections" / "requirements.yml"


def required(requirements: Path) -> dict[str, str]:
    """``{collection: version spec}`` from a requirements file (``*`` when unpinned)."""
    data: dict[str, Any] = yaml.safe_load(requirements.read_text(encoding="utf-8")) or {}
    entries = [e if isinstance(e, dict) else {"name": e} for e in data.get("collections", [])]
    return {str(e["name"]): str(e.get("version", "*")) for e in entries}


def installed(galaxy_listing: dict[str, dict[str, dict[str, str]]]) -> dict[str, str]:
    """``{collection: version}`` Ansible loads: the first collection path that has it wins."""
    found: dict[str, str] = {}
    for collections in galaxy_listing.values():
        for name, info in collections.items():
            found.setdefault(name, info["version"])
    return found


def problems(wanted: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per collection that is missing or outside its version spec."""
    lines = []
    for name, spec in wanted.items():
        if name not in have:
            lines.append(f"{name} is not installed (need {spec})")
        elif not meets_requirements(have[name], spec):
            lines.append(f"{name} {have[name]} is installed, need {spec}")
    return lines


def galaxy_listing() -> dict[str, dict[str, dict[str, str]]]:
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    listing = subprocess.run(
        [str(galaxy), "collection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(listing.stdout or "{}")


def main(argv: list[str]) -> int:
    requirements = Path(argv[0]) if argv else REQUIREMENTS
    found = problems(required(requirements), installed(galaxy_listing()))
    for line in found:
        print(f"check_collections: {line}", file=sys.stderr)
    if found:
        print(
            f"check_collections: install them with: ansible-galaxy collection install -r "
            f"{requirements}",
            file=sys.stderr,
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
