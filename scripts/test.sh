#!/usr/bin/env bash
# The whole test suite: lint, unit tests, and the integration tests against the
# real Docker engine and real ansible-playbook (Molecule included).
# Sets the machine up first (scripts/bootstrap.sh, then the system tools the tests use:
# scripts/install-test-tools.sh), so it runs on a fresh one.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/install-test-tools.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== ansible-lint"
PATH="$PWD/.venv/bin:$PATH" .venv/bin/ansible-lint playbooks roles

echo "== pytest"
# --durations: the slowest tests, to keep the whole run well under 30 minutes on 2 cores
PATH="$PWD/.venv/bin:$PATH" .venv/bin/pytest -ra --durations=25 "$@" tests
