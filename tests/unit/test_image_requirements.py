"""Every image installs what its backend imports.

The install list of an image is what scripts/build-wheelhouse.sh writes for it
(requirements.txt, downloaded) plus what its base image provides
(base-requirements.txt, checked at build), both from pyproject.toml's
[tool.llenergymeasure.wheelhouse]. The imports are read with `ast` from the
backend's module and, transitively, every package module it imports (function
bodies included: the engines are imported lazily), plus the worker that serves it.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.compose import REPO
from packaging.requirements import Requirement

from llenergymeasure.config.models import VLLM_VERSIONS

PACKAGE = "llenergymeasure"
SOURCE = REPO / "src"
IMAGES = {"pytorch-cpu": "pytorch", "pytorch": "pytorch", "vllm": "vllm", "tensorrt": "tensorrt"}
# The engines are not installed on a CPU machine: their distribution by import name.
NOT_INSTALLED_HERE = {"vllm": ["vllm"], "tensorrt_llm": ["tensorrt-llm"]}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def module_file(module: str) -> Path | None:
    """The source file of a package module, or None when `module` is no module."""
    base = SOURCE.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Absolute module names `path` imports anywhere (`from m import n` gives m and m.n)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(*roots: str, skip: frozenset[str] = frozenset()) -> set[str]:
    """Top-level names of the non-package, non-stdlib modules `roots` import, transitively,
    not following the package modules in `skip`."""
    seen: set[str] = set(skip)
    pending = list(roots)
    found: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        if path is None:
            continue
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # parents run first
        for name in imported_names(path):
            top = name.split(".")[0]
            if top == PACKAGE:
                pending.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


@functools.cache
def installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(import_name: str) -> set[str]:
    known = installed_distributions()
    return {canonical(d) for d in known.get(import_name, NOT_INSTALLED_HERE.get(import_name, []))}


def requirement_lines(image: str, view: str, *pin: str) -> list[str]:
    """scripts/image_requirements.py's `view` (download | base) of the image's wheelhouse."""
    script = REPO / "scripts" / "image_requirements.py"
    command = [sys.executable, str(script), str(REPO / "pyproject.toml"), image, view, *pin]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return output.splitlines()


def install_list(image: str) -> set[str]:
    """Distribution names build-wheelhouse.sh has the image install or find in its base."""
    lines = requirement_lines(image, "download") + requirement_lines(image, "base")
    return {canonical(Requirement(line).name) for line in lines if line}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_installs_every_distribution_its_backend_imports(image: str) -> None:
    backend = IMAGES[image]
    # The worker builds any backend's server command line (runner/servers.py), but only
    # its own image's backend module runs in an image: the others are not followed.
    others = frozenset(
        f"{PACKAGE}.runner.backends.{other}" for other in set(IMAGES.values()) - {backend}
    )
    imports = third_party_imports(
        f"{PACKAGE}.runner.backends.{backend}", f"{PACKAGE}.runner.worker", skip=others
    )
    installed = install_list(image)

    unmapped = sorted(name for name in imports if not distributions(name))
    missing = {
        name: sorted(distributions(name))
        for name in sorted(imports)
        if distributions(name) and not distributions(name) & installed
    }

    assert unmapped == [], f"no known distribution for imports {unmapped}"
    assert missing == {}, f"{image} image lacks what {backend} imports: {missing}"


def test_the_engines_imports_are_found_in_function_bodies() -> None:
    """The walk sees lazy imports: otherwise the vLLM/TensorRT-LLM checks prove nothing."""
    assert "vllm" in third_party_imports(f"{PACKAGE}.runner.backends.vllm")
    assert "tensorrt_llm" in third_party_imports(f"{PACKAGE}.runner.backends.tensorrt")


def test_gpu_pytorch_image_takes_torch_from_its_base_not_the_wheelhouse() -> None:
    download, base = requirement_lines("pytorch", "download"), requirement_lines("pytorch", "base")

    assert not any(line.startswith("torch") for line in download)
    assert [line for line in base if line.startswith("torch")] == ["torch>=2.6"]
    assert {"transformers", "tokenizers"} <= {Requirement(line).name for line in download}


def pins(path: Path) -> dict[str, Requirement]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {
        Requirement(line).name: Requirement(line)
        for line in lines
        if line.strip() and not line.startswith("#")
    }


def test_the_cpu_lock_pins_every_requirement_within_the_package_s_floors() -> None:
    """requirements/cpu.txt, the lock the CPU image and the controller's .venv install,
    pins each distribution the CPU image requires, at a version its floor allows
    (torch>=2.6: transformers 5.x switches PyTorch off below it)."""
    lock = pins(REPO / "requirements" / "cpu.txt")
    for line in requirement_lines("pytorch-cpu", "download"):
        required = Requirement(line)
        assert required.name in lock, f"requirements/cpu.txt does not pin {required.name}"
        (version,) = [spec.version for spec in lock[required.name].specifier]
        assert required.specifier.contains(version, prereleases=True), lock[required.name]


def test_the_cpu_lock_keeps_the_hand_set_pins() -> None:
    lock = pins(REPO / "requirements" / "cpu.txt")
    hand_set = pins(REPO / "requirements" / "cpu.in")
    assert hand_set, "requirements/cpu.in pins nothing"
    for name, pin in hand_set.items():
        assert lock.get(name) == pin, f"requirements/cpu.txt: {lock.get(name)}, cpu.in: {pin}"


@pytest.mark.parametrize("version", VLLM_VERSIONS)
def test_each_vllm_version_s_image_checks_its_base_for_that_version(version: str) -> None:
    """build-images.sh --engine-version X pins vllm==X (LEM_ENGINE_PIN): the image build
    fails unless its base carries that very vLLM."""
    base = requirement_lines("vllm", "base", f"vllm=={version}")

    assert [line for line in base if line.startswith("vllm")] == [f"vllm=={version}"]
    assert requirement_lines("vllm", "download", f"vllm=={version}") == requirement_lines(
        "vllm", "download"
    )


def test_a_tensorrt_llm_release_image_checks_its_base_for_that_release() -> None:
    base = requirement_lines("tensorrt", "base", "tensorrt-llm==1.2.0")

    assert [line for line in base if line.startswith("tensorrt")] == ["tensorrt-llm==1.2.0"]


def test_a_pin_of_nothing_the_wheelhouse_requires_is_refused() -> None:
    script = REPO / "scripts" / "image_requirements.py"
    command = [sys.executable, str(script), str(REPO / "pyproject.toml"), "vllm", "base"]
    refused = subprocess.run([*command, "tensorrt-llm==1.2.0"], capture_output=True, text=True)

    assert refused.returncode == 1 and "pins nothing" in refused.stderr
