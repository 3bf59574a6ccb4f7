#!/usr/bin/env bash
# The whole test suite: lint, unit tests, and the integration tests against the
# real Docker engine and real ansible-playbook (Molecule included).
# Sets the machine up first (scripts/bootstrap.sh, then the system tools the tests use:
# scripts/install-test-tools.sh), builds the CPU image and the hosts' wheelhouse once,
# then runs pytest on two workers (pytest-xdist). Prints each phase's wall time.
#
#   LEM_TEST_WORKERS=2   pytest-xdist workers ("0": one process, no xdist)
set -euo pipefail
cd "$(dirname "$0")/.."

phase_started=$SECONDS
timings=()
phase_done() {
    timings+=("$(printf '%-10s %5d s' "$1" $((SECONDS - phase_started)))")
    phase_started=$SECONDS
}
report_timings() {
    echo "== wall time per phase"
    printf '  %s\n' "${timings[@]}"
}
trap report_timings EXIT

scripts/bootstrap.sh
scripts/install-test-tools.sh
phase_done install

# Built before pytest, so that no worker builds while another uses them; the campaign
# runs find them current (scripts/build-images.sh and build-wheelhouse.sh are no-ops then).
scripts/build-images.sh --backend pytorch-cpu >/dev/null
host_target="$(/usr/bin/python3 -c 'import os, sys; print("%d.%d-%s" % (*sys.version_info[:2], os.confstr("CS_GNU_LIBC_VERSION").split()[1]))')"
LEM_PYTHON="$PWD/.venv/bin/python" LEM_WHEEL_PYTHON="${host_target%-*}" \
    LEM_WHEEL_GLIBC="${host_target#*-}" SOURCE_DATE_EPOCH=315532800 \
    scripts/build-wheelhouse.sh host "wheelhouse/host/$host_target"
phase_done images

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== ansible-lint"
PATH="$PWD/.venv/bin:$PATH" .venv/bin/ansible-lint playbooks roles
phase_done lint

echo "== pytest"
# --timeout: a guard against a hang eating CI's 90 minutes, not a speed test.
# --durations: the slowest tests, to keep the whole run under 20 minutes on 2 cores.
workers="${LEM_TEST_WORKERS:-2}"
xdist=()
[ "$workers" = 0 ] || xdist=(-n "$workers" --dist loadgroup --no-loadscope-reorder)
PATH="$PWD/.venv/bin:$PATH" .venv/bin/pytest -ra --durations=25 --timeout=1200 \
    "${xdist[@]}" "$@" tests
phase_done pytest
