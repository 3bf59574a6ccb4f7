"""The host side imports no pydantic: validation happens once, on the controller.

Each Ansible task on a host starts a Python process that imports its module and the
package's host side; pydantic and the models' schemas were most of that start-up
(bench/bench_orchestration.py). The plan the host works from is plain JSON the
controller validated, so the host side (`host/`, `dispatch/`, `lease`, and the modules
in library/ that run on the hosts) reads it as such.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llenergymeasure

PACKAGE_DIR = Path(llenergymeasure.__file__).resolve().parent
REPO = PACKAGE_DIR.parents[1]
HOST_PACKAGES = ("host", "dispatch")
# library/ modules that run on the hosts (lem_plan runs on the controller, lem_host_lock
# before the package is there: standard library only by construction).
HOST_TASKS = ("lem_experiment", "lem_manifest", "lem_restart", "lem_gpu_knobs")


def host_side_modules() -> list[str]:
    modules = ["llenergymeasure.lease", "llenergymeasure.errors", "llenergymeasure.files"]
    for package in HOST_PACKAGES:
        for path in sorted((PACKAGE_DIR / package).glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            modules.append(f"llenergymeasure.{package}{stem}")
    return modules


def imported_after(statement: str) -> set[str]:
    """The top-level names in sys.modules after `statement`, in a fresh interpreter."""
    names = "' '.join(sorted({m.split('.')[0] for m in sys.modules}))"
    probe = f"{statement}\nimport sys\nprint({names})"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


@pytest.mark.parametrize("module", host_side_modules())
def test_host_side_module_imports_no_pydantic(module: str) -> None:
    assert "pydantic" not in imported_after(f"import {module}")


@pytest.mark.parametrize("task", HOST_TASKS)
def test_host_task_imports_no_pydantic(task: str) -> None:
    path = REPO / "library" / f"{task}.py"
    load = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('{task}', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
    )
    assert "pydantic" not in imported_after(load)


def test_the_probe_sees_pydantic_when_it_is_imported() -> None:
    assert "pydantic" in imported_after("import llenergymeasure.config.models")
