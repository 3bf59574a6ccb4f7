#!/usr/bin/env bash
# Make this machine ready for the controller and the tests: a venv with the
# package and its tools in .venv, and a running Docker engine with Compose v2.
# Idempotent: a second run changes nothing and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.lem-installed
inputs_hash=$(cat pyproject.toml requirements/cpu.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs_hash" ]; then
    echo "bootstrap: installing Python packages into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # --no-compile: most installed modules are never imported here; Python compiles the
    # rest on first import. Halves a fresh install (bench/bench_bootstrap.py).
    .venv/bin/python -m pip install --quiet --no-compile -c requirements/cpu.txt \
        -e '.[dev,controller,pytorch]'
    echo "$inputs_hash" > "$stamp"
fi
# The roles' collections (collections/requirements.yml) come with the ansible
# package: check their versions, without asking Galaxy (CI cannot reach it).
.venv/bin/python scripts/check_collections.py collections/requirements.yml

scripts/install-docker.sh
