"""The suite's own parallel set-up: tests in one xdist_group run on one pytest-xdist worker.

The integration tests rely on it (docs/testing.md): a session fixture that makes a shared
campaign or a private engine runs once only when every test that reads it runs on one
worker. pytest 9.2 broke it silently (pytest-xdist issue 1386: the group suffix of the
node id no longer takes), so pyproject.toml keeps pytest below 9.2; this test says so the
day a combination breaks it again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GROUPED_TESTS = """
import os
from pathlib import Path

import pytest

GROUP = pytest.mark.xdist_group("together")


def record(name):
    Path(name).write_text(os.environ["PYTEST_XDIST_WORKER"])


@GROUP
def test_first():
    record("first")


@GROUP
def test_second():
    record("second")


@pytest.mark.parametrize("n", range(6))
def test_anywhere(n):
    pass
"""


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(GROUPED_TESTS.replace("second", "third"))
    (tmp_path / "test_b.py").write_text(GROUPED_TESTS.replace("first", "fourth"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout[-2000:]
    workers = {name: (tmp_path / name).read_text() for name in ("first", "third", "fourth")}
    assert len(set(workers.values())) == 1, workers
