"""The controller venv install of scripts/bootstrap.sh, with and without byte-compiling.

A clean clone (CI's) makes .venv afresh: pip unpacks torch, ansible, molecule, ... and by
default byte-compiles every module it installs, most of which no test imports. Each round
installs the same requirements into two new venvs side by side (pip's cache warm for both),
and prints the times and their ratio.

    .venv/bin/python bench/bench_bootstrap.py [--rounds N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL = ["-c", "requirements/cpu.txt", "-e", ".[dev,controller,pytorch]"]


def install_seconds(*pip_options: str) -> float:
    with tempfile.TemporaryDirectory(prefix="lem-bench-venv-") as directory:
        venv = Path(directory) / "venv"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [venv / "bin" / "python", "-m", "pip", "install", "--quiet", *pip_options, *INSTALL],
            cwd=REPO,
            check=True,
        )
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    rounds = parser.parse_args().rounds
    install_seconds()  # warms pip's cache, so that neither variant pays for downloads
    compiled, not_compiled = [], []
    for _ in range(rounds):
        compiled.append(install_seconds())
        not_compiled.append(install_seconds("--no-compile"))
    best_compiled, best_not = min(compiled), min(not_compiled)
    print(f"pip install (byte-compiled, pip's default): {best_compiled:6.1f} s")
    print(f"pip install --no-compile:                    {best_not:6.1f} s")
    print(f"ratio: {best_not / best_compiled:.2f}")


if __name__ == "__main__":
    main()
