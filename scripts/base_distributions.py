#!/usr/bin/env python3
"""What a base image's Python already carries, so that a wheelhouse is resolved against it.

    base_distributions.py probe                  (run by the base image's python3)
    base_distributions.py stubs BASEFILE DIR [NAME...]

probe   prints, as JSON, every distribution the interpreter sees (name, version and
        Requires-Dist), the first of a name on sys.path winning, as an import would;
stubs   writes, into DIR, a stub wheel per distribution of BASEFILE (probe's output):
        metadata only (the base's version with the local label `+lembase`, and its own
        Requires-Dist), and prints a requirement line pinning each NAME to its stub.

Why: pip's download resolves on the controller and knows nothing of the image. With the
stubs on --find-links, the base's distributions take part in the resolution with their
own requirements: a dependency lem's venv adds must fit what the engine's packages need
(vLLM 0.11.1 needs transformers<5, whose 4.x needs huggingface-hub<1.0, so GuideLLM's
datasets resolves to 5.0.1 rather than 5.2.0, which needs huggingface-hub>=1.31), and a
pinned NAME (the engine and torch: base-provides) is never downloaded, nor its own
dependencies (a CUDA torch's are several GB). A stub's local version sorts above the
index's same release, so the base's copy is chosen wherever it fits. The stubs are not
installed anywhere: the image build installs next to the base's real copies, and checks
that nothing it adds breaks them (docker/Dockerfile.*: pip check).

Standard library only, and Python 3.8 syntax: probe runs with whatever Python the base has.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

LOCAL_LABEL = "lembase"
# The image build runs pip from its own wheel in the wheelhouse: never replaced by a stub.
NEVER_STUBBED = {"pip"}
_PUBLIC_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def probe() -> list[dict]:
    from importlib import metadata

    seen: dict[str, dict] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in seen:
            seen[canonical(name)] = {
                "name": name,
                "version": dist.version,
                "requires": list(dist.requires or []),
            }
    return sorted(seen.values(), key=lambda d: canonical(d["name"]))


def stub_version(version: str) -> str | None:
    """The base's version with its local label replaced; None when not PEP 440."""
    public = version.split("+", 1)[0]
    return f"{public}+{LOCAL_LABEL}" if _PUBLIC_VERSION.match(public) else None


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_stub(name: str, version: str, requires: list[str], directory: Path) -> Path:
    """A wheel of metadata only: `name` at `version` requiring `requires`."""
    stem = f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": "".join(
            [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
            + [f"Requires-Dist: {line}\n" for line in requires]
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: lem\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [_record_line(path, data) for path, data in files.items()] + [f"{info}/RECORD,,"]
    path = directory / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def write_stubs(base: list[dict], directory: Path, pinned: list[str]) -> list[str]:
    """Stubs of `base` in `directory`; the requirement lines pinning `pinned` to them."""
    directory.mkdir(parents=True, exist_ok=True)
    versions = {}
    for dist in base:
        version = stub_version(dist["version"])
        if version is None or canonical(dist["name"]) in NEVER_STUBBED:
            continue
        write_stub(dist["name"], version, dist["requires"], directory)
        versions[canonical(dist["name"])] = version
    missing = [name for name in pinned if canonical(name) not in versions]
    if missing:
        raise KeyError(f"the base image carries no {', '.join(missing)}")
    return [f"{canonical(name)}=={versions[canonical(name)]}" for name in pinned]


def main(argv: list[str]) -> int:
    if argv == ["probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) >= 3 and argv[0] == "stubs":
        base = json.loads(Path(argv[1]).read_text())
        try:
            pins = write_stubs(base, Path(argv[2]), argv[3:])
        except KeyError as exc:
            print(f"base_distributions: {exc.args[0]} ({argv[1]})", file=sys.stderr)
            return 1
        print("\n".join(pins))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
