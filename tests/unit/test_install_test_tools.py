"""scripts/install-test-tools.sh installs every system tool the tests run (issue 10, item 8)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from fixtures.browser import CHROMIUM
from fixtures.sshd import SSHD

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-test-tools.sh"


def installed_tools() -> dict[str, str]:
    """The script's table: tool path -> Debian package."""
    table = re.findall(r"^\s+\[(/[^\]]+)\]=(\S+)$", SCRIPT.read_text(encoding="utf-8"), re.M)
    return dict(table)


def test_every_tool_a_fixture_runs_is_installed_by_the_script() -> None:
    tools = installed_tools()
    for tool in (str(SSHD), "/usr/bin/ssh", "/usr/bin/ssh-keygen", CHROMIUM):
        assert tool in tools, f"{tool} is used by the tests but not installed by {SCRIPT.name}"
    assert tools[str(SSHD)] == "openssh-server"
    assert tools[CHROMIUM] == "chromium"


def test_the_test_command_installs_the_tools_before_pytest() -> None:
    lines = (REPO / "scripts" / "test.sh").read_text(encoding="utf-8").splitlines()
    assert lines.index("scripts/install-test-tools.sh") < next(
        i for i, line in enumerate(lines) if "pytest" in line and not line.startswith("#")
    )


def test_with_every_tool_present_the_script_installs_nothing() -> None:
    """LEM_TEST_TOOLS_INSTALL=0 would fail naming any missing package; here none is."""
    run = subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "LEM_TEST_TOOLS_INSTALL": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert all(Path(tool).is_file() for tool in installed_tools())
