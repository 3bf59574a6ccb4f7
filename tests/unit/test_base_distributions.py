"""scripts/base_distributions.py: a base image's distributions, and the stub wheels that make
pip's download resolve against them (scripts/build-wheelhouse.sh, LEM_WHEEL_BASE).

The resolution test runs pip itself, offline, over a small index of wheels made here: an
engine in the base that needs hub<1.0, and a load generator whose data library's newest
release needs hub>=1.31 (vLLM 0.11.1's transformers<5 against GuideLLM's datasets, in
small). The image build's check that nothing breaks the base is docker/Dockerfile.*'s.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "base_distributions", REPO / "scripts" / "base_distributions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bd = load_script()

BASE = [
    {"name": "Engine", "version": "0.11.1+cu128", "requires": ["hub<1.0,>=0.34", "torchy"]},
    {"name": "torchy", "version": "2.8.0a0+5228986c39.nv25.06", "requires": ["heavy-cuda==9"]},
    {"name": "heavy_cuda", "version": "9", "requires": []},
    {"name": "hub", "version": "0.36.0", "requires": []},
    {"name": "pip", "version": "24.0", "requires": []},
    {"name": "odd", "version": "not-a-version", "requires": []},
]


def test_probe_lists_what_the_interpreter_sees_once_each_with_requirements() -> None:
    probed = bd.probe()
    names = [bd.canonical(d["name"]) for d in probed]
    assert len(names) == len(set(names))
    pydantic = next(d for d in probed if bd.canonical(d["name"]) == "pydantic")
    from importlib import metadata

    assert pydantic["version"] == metadata.version("pydantic")
    assert any(line.startswith("pydantic-core") for line in pydantic["requires"])


def test_probe_runs_as_the_image_build_runs_it(tmp_path: Path) -> None:
    # build-images.sh pipes the script to the base's python3 on standard input.
    script = (REPO / "scripts" / "base_distributions.py").read_text()
    done = subprocess.run(
        [sys.executable, "-", "probe"], input=script, capture_output=True, text=True, check=True
    )
    assert {bd.canonical(d["name"]) for d in json.loads(done.stdout)} >= {"pydantic", "pip"}


@pytest.mark.parametrize(
    ("version", "stub"),
    [
        ("0.36.0", "0.36.0+lembase"),
        ("2.8.0+cu128", "2.8.0+lembase"),
        ("2.8.0a0+5228986c39.nv25.06", "2.8.0a0+lembase"),
        ("1.0.post1.dev3", "1.0.post1.dev3+lembase"),
        ("not-a-version", None),
    ],
)
def test_a_stub_keeps_the_public_version_under_its_own_local_label(
    version: str, stub: str | None
) -> None:
    assert bd.stub_version(version) == stub


def test_stubs_carry_the_base_requirements_and_pins_name_the_provided(tmp_path: Path) -> None:
    pins = bd.write_stubs(BASE, tmp_path, ["engine", "Torchy"])
    assert pins == ["engine==0.11.1+lembase", "torchy==2.8.0a0+lembase"]
    wheels = sorted(p.name for p in tmp_path.glob("*.whl"))
    # pip stays a real wheel (the image build runs it); a non-PEP 440 version is skipped
    assert wheels == [
        "Engine-0.11.1+lembase-py3-none-any.whl",
        "heavy_cuda-9+lembase-py3-none-any.whl",
        "hub-0.36.0+lembase-py3-none-any.whl",
        "torchy-2.8.0a0+lembase-py3-none-any.whl",
    ]
    with zipfile.ZipFile(tmp_path / wheels[0]) as wheel:
        metadata = wheel.read("Engine-0.11.1+lembase.dist-info/METADATA").decode()
    assert "Requires-Dist: hub<1.0,>=0.34\n" in metadata and "Requires-Dist: torchy\n" in metadata


def test_a_provided_distribution_the_base_lacks_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="the base image carries no vllm"):
        bd.write_stubs(BASE, tmp_path, ["vllm"])


def make_index(directory: Path) -> Path:
    """The package index of the test, as wheels of metadata only."""
    directory.mkdir()
    for name, version, requires in [
        ("hub", "0.36.0", []),
        ("hub", "2.4.0", []),
        ("data", "5.0.1", ["hub<2.0,>=0.25"]),
        ("data", "5.2.0", ["hub<3.0,>=1.31"]),
        ("gen", "0.8.1", ["data>=5.0.1", "torchy"]),
        ("torchy", "2.9.0", ["heavy-cuda==10"]),
        ("heavy-cuda", "10", []),
    ]:
        bd.write_stub(name, version, requires, directory)
    return directory


def download(tmp_path: Path, index: Path, *base_args: str) -> list[str]:
    """What pip's download of `gen` saves, as build-wheelhouse.sh runs it."""
    dest = tmp_path / "deps"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-index",
            "--dest",
            str(dest),
            "--find-links",
            str(index),
            *base_args,
            "gen==0.8.1",
        ],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    return sorted(p.name.split("-py3")[0] for p in dest.glob("*.whl"))


def test_without_the_base_pip_takes_the_newest_and_its_heavy_dependencies(tmp_path: Path) -> None:
    assert download(tmp_path, make_index(tmp_path / "index")) == [
        "data-5.2.0",
        "gen-0.8.1",
        "heavy_cuda-10",
        "hub-2.4.0",  # would shadow the base's hub and break its engine
        "torchy-2.9.0",
    ]


def test_against_the_base_the_download_fits_the_engine_and_skips_what_it_provides(
    tmp_path: Path,
) -> None:
    stubs = tmp_path / "stubs"
    pins = bd.write_stubs(BASE, stubs, ["engine", "torchy"])
    (stubs / "pins.txt").write_text("\n".join(pins) + "\n")
    saved = download(
        tmp_path,
        make_index(tmp_path / "index"),
        "--find-links",
        str(stubs),
        "-r",
        str(stubs / "pins.txt"),
    )
    # data 5.0.1, the newest that the base's hub fits; the base's own copies are stubs
    # (build-wheelhouse.sh deletes them), and the provided torchy brings nothing
    assert [name for name in saved if "+lembase" not in name] == ["data-5.0.1", "gen-0.8.1"]
    assert "hub-0.36.0+lembase" in saved and "torchy-2.8.0a0+lembase" in saved
