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


def script_with_tools(tmp_path: Path, present: set[str]) -> Path:
    """A copy of the script whose table points at files under `tmp_path`: those of
    `present` exist, the others do not, whatever this machine has installed."""
    text = SCRIPT.read_text(encoding="utf-8")
    for tool in installed_tools():
        stand_in = tmp_path / "tools" / tool.lstrip("/")
        if tool in present:
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\n")
            stand_in.chmod(0o755)
        text = text.replace(f"[{tool}]=", f"[{stand_in}]=")
    copy = tmp_path / SCRIPT.name
    copy.write_text(text, encoding="utf-8")
    copy.chmod(0o755)
    return copy


def run_script(script: Path) -> subprocess.CompletedProcess[str]:
    """LEM_TEST_TOOLS_INSTALL=0: a missing tool fails, naming its package; nothing installs."""
    return subprocess.run(
        [str(script)],
        env={**os.environ, "LEM_TEST_TOOLS_INSTALL": "0"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_with_every_tool_present_the_script_installs_nothing(tmp_path: Path) -> None:
    run = run_script(script_with_tools(tmp_path, set(installed_tools())))

    assert (run.returncode, run.stderr) == (0, "")


def test_a_missing_tool_is_named_by_its_package(tmp_path: Path) -> None:
    present = set(installed_tools()) - {CHROMIUM}

    run = run_script(script_with_tools(tmp_path, present))

    assert run.returncode == 1
    assert "missing chromium and LEM_TEST_TOOLS_INSTALL=0 forbids installing them" in run.stderr
