"""`scripts/gpu-check.sh --bundle DIR`: the GPU check for a bare, offline GPU machine.

The bundle is run in a container of the CPU image with no network, stripped to what such
a machine has (Python, torch, transformers, nvidia-ml-py; no pydantic, no llenergymeasure):
every preparation step must pass and the verdict must be `no_gpu`, so on a GPU machine the
first thing to fail could only be the device. The CPU image's Python is Debian 12's 3.11,
so that path runs in the container; the 3.12 bundle's wheel tags are checked separately.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
GPU_CHECK = REPO / "scripts" / "gpu-check.sh"
EXIT_NO_GPU = 3
# What a GPU machine brings, with their dependencies; the container keeps nothing else.
GPU_MACHINE_HAS = ("torch", "transformers", "nvidia-ml-py")

# Not on the GPU machine, though today's transformers requires typer (its CLI), which
# requires pydantic: the machine's transformers may be older, and the bundle must bring them.
GPU_MACHINE_LACKS = ("typer", "pydantic")
# The distributions outside the closure of the roots given (less GPU_MACHINE_LACKS) in the
# image's venv.
NOT_ON_GPU_MACHINE = """
import re, sys
from importlib import metadata
from packaging.requirements import Requirement

def name(text): return re.sub(r"[-_.]+", "-", text).lower()
dists = {name(d.metadata["Name"]): d for d in metadata.distributions()}
keep, todo = set(), [name(n) for n in sys.argv[2:]]
lacks = set(sys.argv[1].split(","))
while todo:
    current = todo.pop()
    if current in keep or current not in dists or current in lacks:
        continue
    keep.add(current)
    for line in dists[current].requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(name(req.name))
print(" ".join(sorted(set(dists) - keep)))
"""


def make_bundle(where: Path, python: str, glibc: str) -> Path:
    made = subprocess.run(
        [str(GPU_CHECK), "--bundle", str(where), "--python", python, "--glibc", glibc],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr[-4000:]
    return where


def wheels_of(bundle: Path) -> list[Path]:
    return sorted((bundle / "wheelhouse" / "deps").glob("*.whl"))


def image_python_and_glibc(image: str) -> tuple[str, str]:
    probe = (
        "import os, sys; v = sys.version_info; "
        "print(f'{v[0]}.{v[1]}', os.confstr('CS_GNU_LIBC_VERSION').split()[1])"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "python", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    python, glibc = out.stdout.split()
    return python, glibc


def supported_tags(python: tuple[int, int], glibc_minor: int) -> set[Tag]:
    """The tags pip accepts on CPython `python`, x86_64, glibc 2.`glibc_minor`."""
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(glibc_minor, 16, -1)]
    platforms += ["manylinux2014_x86_64", "linux_x86_64"]
    interpreter = f"cp{python[0]}{python[1]}"
    return set(cpython_tags(python, [interpreter], platforms)) | set(
        compatible_tags(python, interpreter, platforms)
    )


def test_a_bundle_for_3_12_holds_wheels_for_cp312_and_nothing_the_machine_has(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "bundle", "3.12", "2.28")
    wheels = wheels_of(bundle)
    accepted = supported_tags((3, 12), 28)

    parsed = {wheel.name: parse_wheel_filename(wheel.name) for wheel in wheels}
    unfit = [name for name, (_, _, _, tags) in parsed.items() if not tags & accepted]
    assert unfit == [], f"wheels pip would refuse on CPython 3.12: {unfit}"
    names = [str(dist) for dist, *_ in parsed.values()]
    interpreters = {tag.interpreter for *_, tags in parsed.values() for tag in tags}
    assert "cp312" in interpreters and "cp311" not in interpreters
    assert {"pydantic", "pydantic-core", "pyyaml", "typer", "rich"} <= set(names)
    assert not set(GPU_MACHINE_HAS) & set(names), "the machine's own packages are reused"
    assert names.count("pip") == 1
    assert len(list((bundle / "wheelhouse" / "lem").glob("llenergymeasure-*.whl"))) == 1
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert size < 100 * 2**20, f"the bundle is {size / 2**20:.0f} MiB"
    assert os.access(bundle / "run.sh", os.X_OK)


def test_the_bundle_prepares_everything_offline_and_stops_only_at_the_device(
    tmp_path: Path, cpu_image: str
) -> None:
    python, glibc = image_python_and_glibc(cpu_image)
    bundle = make_bundle(tmp_path / "bundle", python, glibc)
    keep = " ".join((",".join(GPU_MACHINE_LACKS), "pip", *GPU_MACHINE_HAS))
    script = (
        f"extra=$(python - {keep} <<'LIST'\n{NOT_ON_GPU_MACHINE}\nLIST\n)\n"
        'echo "removed: $extra "\n'
        "python -m pip uninstall --yes --no-input $extra >/dev/null || exit 89\n"
        "python -c 'import pydantic' 2>/dev/null && { echo 'pydantic left'; exit 90; }\n"
        "python -c 'import llenergymeasure' 2>/dev/null && { echo 'lem left'; exit 91; }\n"
        "python -c 'import torch, transformers, pynvml' || exit 92\n"
        "/bundle/run.sh; rc=$?\n"
        f"chown -R {os.getuid()}:{os.getgid()} /bundle\n"
        "exit $rc\n"
    )

    ran = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "--volume", f"{bundle}:/bundle"),
            *("--env", "PYTHON=/opt/lem/bin/python", "--entrypoint", "bash", cpu_image),
            *("-c", script),
        ],
        capture_output=True,
        text=True,
    )

    assert "removed:" in ran.stdout and " pydantic " in ran.stdout, ran.stdout[-2000:]
    report_file = bundle / "out" / "report.json"
    assert report_file.exists(), f"exit {ran.returncode}: {ran.stdout[-2000:]}{ran.stderr[-4000:]}"
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert (ran.returncode, report["status"]) == (EXIT_NO_GPU, "no_gpu"), ran.stderr[-4000:]
    assert list(report["preparation"]) == ["venv", "lem", "tiny_model"]
    assert "NVML" in report["reason"] and report["runs"] == {}
    assert report["work_dir"] == "/bundle/out"
    assert {"setup.log", "lem.log", "tiny.log", "probe.log"} <= {
        log.name for log in (bundle / "out" / "logs").iterdir()
    }
    assert (bundle / "out" / "models" / "tiny" / "config.json").exists()
