#!/usr/bin/env python3
"""The requirement lines of one wheelhouse, from pyproject.toml's [tool.llenergymeasure.wheelhouse].

    image_requirements.py PYPROJECT NAME download|base|constraints [PIN]

download     what pip downloads into the wheelhouse: pip itself (the image build runs
             pip from its wheel), the package's dependencies and its extras, less the
             distributions the base image provides;
base         the requirement lines of the distributions the base image provides (a
             bare name where no extra names it): checked at image build, not downloaded;
constraints  the constraints file, relative to the repository ("" for none).
PIN          a requirement line that replaces the line of the same distribution (an image
             of another engine version: `vllm==0.33.0`).

Standard library only: scripts/build-wheelhouse.sh runs it with any Python >= 3.11.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from base_distributions import canonical  # beside this script (sys.path[0])

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(line: str) -> str:
    match = _NAME.match(line)
    if match is None:
        raise ValueError(f"not a requirement: {line!r}")
    return canonical(match.group(1))


def load(pyproject: Path) -> dict[str, Any]:
    with pyproject.open("rb") as file:
        return tomllib.load(file)


def wheelhouse(project: dict[str, Any], name: str) -> dict[str, Any]:
    wheelhouses = project["tool"]["llenergymeasure"]["wheelhouse"]
    if name not in wheelhouses:
        raise KeyError(f"unknown wheelhouse {name!r} (expected {', '.join(wheelhouses)})")
    return wheelhouses[name]


def split_requirements(
    project: dict[str, Any], name: str, pin: str | None = None
) -> tuple[list[str], list[str]]:
    """(lines to download, lines the base image provides) of wheelhouse `name`; `pin`
    replaces the line of its distribution."""
    spec = wheelhouse(project, name)
    extras = project["project"]["optional-dependencies"]
    lines = ["pip", *project["project"]["dependencies"]]
    for extra in spec.get("extras", []):
        lines += extras[extra]
    if pin is not None:
        pinned = requirement_name(pin)
        if pinned not in {requirement_name(line) for line in lines}:
            raise KeyError(f"{pin!r} pins nothing wheelhouse {name!r} requires")
        lines = [pin if requirement_name(line) == pinned else line for line in lines]
    provided = {canonical(dist) for dist in spec.get("base-provides", [])}
    download = [line for line in lines if requirement_name(line) not in provided]
    base = [line for line in lines if requirement_name(line) in provided]
    named = {requirement_name(line) for line in base}
    base += sorted(provided - named)
    return download, base


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[2] not in ("download", "base", "constraints"):
        print(__doc__, file=sys.stderr)
        return 2
    project = load(Path(argv[0]))
    try:
        if argv[2] == "constraints":
            lines = [wheelhouse(project, argv[1]).get("constraints", "")]
        else:
            download, base = split_requirements(project, argv[1], argv[3] if argv[3:] else None)
            lines = download if argv[2] == "download" else base
    except KeyError as exc:
        print(f"image_requirements: {exc.args[0]}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
