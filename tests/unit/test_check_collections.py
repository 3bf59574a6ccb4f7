"""scripts/check_collections.py: the bootstrap's check of the pinned Ansible collections."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fixtures.load import load_module

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_collections.py"


check = load_module(SCRIPT, "check_collections")


def test_the_pin_is_community_docker_from_3_13() -> None:
    assert check.required(REPO / "collections" / "requirements.yml") == {
        "community.docker": ">=3.13.0"
    }


def test_too_old_missing_and_satisfied_collections() -> None:
    wanted = {"community.docker": ">=3.13.0", "community.general": "*"}
    assert check.problems(wanted, {"community.docker": "3.12.2"}) == [
        "community.docker 3.12.2 is installed, need >=3.13.0",
        "community.general is not installed (need *)",
    ]
    assert check.problems(wanted, {"community.docker": "4.8.5", "community.general": "1.0.0"}) == []


def test_the_first_collection_path_wins() -> None:
    listing = {
        "/home/u/.ansible/collections/ansible_collections": {
            "community.docker": {"version": "3.4.0"}
        },
        "/venv/site-packages/ansible_collections": {"community.docker": {"version": "4.8.5"}},
    }
    assert check.installed(listing) == {"community.docker": "3.4.0"}


def test_requirements_without_a_version_or_as_bare_names(tmp_path: Path) -> None:
    path = tmp_path / "requirements.yml"
    path.write_text("collections:\n  - community.docker\n  - name: ansible.posix\n")
    assert check.required(path) == {"community.docker": "*", "ansible.posix": "*"}


def test_the_script_fails_clearly_on_an_unmet_pin(tmp_path: Path) -> None:
    path = tmp_path / "requirements.yml"
    path.write_text('collections:\n  - name: community.docker\n    version: ">=999.0.0"\n')
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "community.docker" in run.stderr and "need >=999.0.0" in run.stderr
    assert "ansible-galaxy collection install -r" in run.stderr


def test_the_installed_collections_meet_the_pin() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


def test_bootstrap_runs_the_check() -> None:
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
    assert "scripts/check_collections.py collections/requirements.yml" in bootstrap
