"""`molecule test` on molecule/default: converge, idempotence, verify, destroy.

Molecule runs the campaign playbook against this machine's Docker engine; its
idempotence step is the proof that a second run of a finished campaign changes
nothing, and verify checks the manifest and the summary.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from fixtures.campaign import BIN, REPO, playbook_env
from python_on_whales import DockerClient

pytestmark = pytest.mark.docker

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def test_molecule_default_scenario_passes(tmp_path: Path, docker_engine: DockerClient) -> None:
    completed = subprocess.run(
        [str(BIN / "molecule"), "test", "--scenario-name", "default"],
        cwd=REPO,
        # Molecule keeps its state under the cache directory: one of the test's own.
        env=playbook_env({"XDG_CACHE_HOME": str(tmp_path / "cache"), "NO_COLOR": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    output = ANSI_ESCAPE.sub("", completed.stdout)
    assert completed.returncode == 0, output[-6000:]
    for step in ("converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"default \S+ {step}: Executed: Successful", output), output[-3000:]
