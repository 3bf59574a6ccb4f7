"""The host side imports no pydantic: validation happens once, on the controller.

Each Ansible task on a host starts a Python process that imports its module and the
package's host side; pydantic and the models' schemas were most of that start-up
(bench/bench_orchestration.py). The plan the host works from is plain JSON the
controller validated, so the host side (`host/`, `dispatch/`, `lease`, and the modules
in library/ that run on the hosts) reads it as such.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import llenergymeasure

PACKAGE_DIR = Path(llenergymeasure.__file__).resolve().parent
REPO = PACKAGE_DIR.parents[1]
HOST_PACKAGES = ("host", "dispatch")
# library/ modules that run on the hosts (lem_plan runs on the controller, lem_host_lock
# before the package is there: standard library only by construction).
HOST_TASKS = ("lem_experiment", "lem_manifest", "lem_restart", "lem_gpu_knobs")
# In the `host` extra for what is not the package: community.docker's Docker-API modules
# (docker_image_info, docker_image_load in lem_services) import requests on the host.
FOR_COLLECTIONS = {"requests"}
# Not third-party distributions: the package, Ansible's module_utils, setuptools' hook.
NOT_DISTRIBUTIONS = {"__main__", "llenergymeasure", "ansible", "_distutils_hack"}


def host_side_modules() -> list[str]:
    modules = ["llenergymeasure.lease", "llenergymeasure.errors", "llenergymeasure.files"]
    for package in HOST_PACKAGES:
        for path in sorted((PACKAGE_DIR / package).glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            modules.append(f"llenergymeasure.{package}{stem}")
    return modules


def load_task(task: str) -> str:
    """Python statements that import a library/ module as Ansible runs it (no main())."""
    path = REPO / "library" / f"{task}.py"
    return (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('{task}', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
    )


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
    assert "pydantic" not in imported_after(load_task(task))


def distributions(requirements: list[str]) -> set[str]:
    return {Requirement(line).name.lower().replace("_", "-") for line in requirements}


def test_the_host_extra_holds_what_the_host_side_imports_and_nothing_unused() -> None:
    """What a campaign host installs beyond the package's own dependencies (the `host`
    extra) is what the host side imports, plus what the roles' collections need there."""
    statements = [f"import {module}" for module in host_side_modules()]
    statements += [load_task(task) for task in HOST_TASKS]
    names = imported_after("\n".join(statements)) - set(sys.stdlib_module_names)
    # What Ansible's module_utils import comes in the module's payload (AnsiballZ).
    names -= imported_after("import ansible.module_utils.basic")
    by_name = importlib.metadata.packages_distributions()
    imported = {
        distribution.lower().replace("_", "-")
        for name in names - NOT_DISTRIBUTIONS
        for distribution in by_name.get(name, [name])
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    host_extra = distributions(project["optional-dependencies"]["host"])
    declared = distributions(project["dependencies"]) | host_extra

    assert imported <= declared, f"imported on a host but not declared: {imported - declared}"
    assert host_extra - imported - FOR_COLLECTIONS == set()


def test_the_probe_sees_pydantic_when_it_is_imported() -> None:
    assert "pydantic" in imported_after("import llenergymeasure.config.models")
