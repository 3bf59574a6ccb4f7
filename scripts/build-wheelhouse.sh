#!/usr/bin/env bash
# Build the wheelhouse a backend image installs from, with no network in the
# image build: this package's wheel plus binary wheels of its dependencies for
# the image's Python and platform.
#
#   scripts/build-wheelhouse.sh BACKEND OUTDIR
#
# BACKEND: a wheelhouse of pyproject.toml's [tool.llenergymeasure.wheelhouse]:
# pytorch-cpu | pytorch | vllm | tensorrt (an image's: the package, its core
# dependencies and its backend's extra; what the upstream GPU base image already
# carries, e.g. torch, is not downloaded but checked at image build), or host (the
# package and its host extra: the venv the Ansible modules run in on a host).
# scripts/image_requirements.py turns that table into requirement lines.
#
# Layout of OUTDIR (the image build context):
#   deps/*.whl, deps/requirements.txt, deps/constraints.txt   dependency layer
#   deps/base-requirements.txt     what the base image must carry already
#   lem/llenergymeasure-*.whl      the package layer
#   deps.tar                       host only: the dependency layer as one file to copy
#
# Cached: dependencies are downloaded only when the wheelhouse cannot satisfy
# them any more (a changed requirement or constraint); OUTDIR only grows. The
# package wheel is built only when its sources changed (their hash is kept in
# lem/.inputs-hash). Runs on one OUTDIR are serialized (flock on OUTDIR/.lock),
# and the wheel is replaced by a rename, so a reader never sees half a wheel.
#
#   LEM_WHEEL_PYTHON=3.11   the image's Python (X.Y)
#   LEM_WHEEL_GLIBC=2.36    the image's glibc: newest manylinux tag accepted
#   LEM_PYTHON              interpreter that runs pip (default: .venv/bin/python, python3)
#   LEM_ENGINE_PIN          a requirement replacing the engine's pin (vllm==0.33.0: the
#                           image of another vLLM version, build-images.sh --engine-version)
#   LEM_WHEEL_BASE          what the base image's Python carries (scripts/base_distributions.py
#                           probe, run there by build-images.sh): the download is resolved
#                           against it, never replaces base-provides and never downloads them
#   LEM_WHEEL_FIND_LINKS    another wheelhouse's deps/ to take wheels from first
#   LEM_WHEEL_CONSTRAINTS   a constraints file replacing the table's (relative to the
#                           repository; scripts/lock-cpu-requirements.sh resolves the lock)
#                           (gpu-check.sh --bundle: only what resolves is copied)
# pip's own settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, ...) apply as usual.
set -euo pipefail

say() { echo "build-wheelhouse: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

[ $# -eq 2 ] || die "usage: $0 pytorch-cpu|pytorch|vllm|tensorrt|host OUTDIR"
BACKEND="$1"
OUTDIR="$(mkdir -p "$2" && cd "$2" && pwd)"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TARGET_PYTHON="${LEM_WHEEL_PYTHON:-3.11}"
TARGET_GLIBC="${LEM_WHEEL_GLIBC:-2.36}"

if [ -n "${LEM_PYTHON:-}" ]; then
    PY="$LEM_PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then
    PY="$REPO/.venv/bin/python"
else
    PY=python3
fi

# One view of the wheelhouse's table (download | base | constraints).
requirements() {
    "$PY" "$REPO/scripts/image_requirements.py" "$REPO/pyproject.toml" "$BACKEND" "$1" \
        ${LEM_ENGINE_PIN:+"$LEM_ENGINE_PIN"}
}

# Also the check that BACKEND names a wheelhouse.
CONSTRAINTS="$(requirements constraints)" || die "usage: $0 BACKEND OUTDIR"
CONSTRAINTS="${LEM_WHEEL_CONSTRAINTS:-$CONSTRAINTS}"

# pip does not widen manylinux_2_X to older glibc tags by itself: list them all.
platform_args() {
    local minor="${TARGET_GLIBC#2.}"
    local tag
    for ((tag = minor; tag >= 17; tag--)); do
        printf -- '--platform manylinux_2_%s_x86_64 ' "$tag"
    done
    printf -- '--platform manylinux2014_x86_64'
}

# Temporary directories, removed on exit.
SCRATCH=()
trap 'rm -rf "${SCRATCH[@]}"' EXIT

# With LEM_WHEEL_BASE: stub wheels of the base's distributions in BASE_STUBS, and
# BASE_STUBS/pins.txt requiring the distributions the base provides (the engine, torch)
# at their stubs: they join the resolution with their own requirements.
BASE_STUBS=
make_base_stubs() {
    [ -n "${LEM_WHEEL_BASE:-}" ] || return 0
    BASE_STUBS="$(mktemp -d)"
    SCRATCH+=("$BASE_STUBS")
    local provided
    provided="$(sed 's/[^A-Za-z0-9._-].*//' "$OUTDIR/deps/base-requirements.txt")"
    # shellcheck disable=SC2086  # one word per distribution name
    "$PY" "$REPO/scripts/base_distributions.py" stubs "$LEM_WHEEL_BASE" "$BASE_STUBS" \
        $provided >"$BASE_STUBS/pins.txt" || die "cannot resolve against the base ($LEM_WHEEL_BASE)"
}

# pip download against the wheelhouse and (unless --no-index) the package index; stubs
# it picked are not wheels to install, and go.
pip_download() {
    local status=0
    # shellcheck disable=SC2046  # one word per pip option
    "$PY" -m pip download --quiet --dest "$OUTDIR/deps" --only-binary :all: \
        --implementation cp --python-version "$TARGET_PYTHON" $(platform_args) \
        --find-links "$OUTDIR/deps" ${LEM_WHEEL_FIND_LINKS:+--find-links "$LEM_WHEEL_FIND_LINKS"} \
        ${BASE_STUBS:+--find-links "$BASE_STUBS" -r "$BASE_STUBS/pins.txt"} \
        -r "$OUTDIR/deps/requirements.txt" -c "$OUTDIR/deps/constraints.txt" "$@" || status=$?
    find "$OUTDIR/deps" -maxdepth 1 -name '*+lembase-*.whl' -delete
    return "$status"
}

# Standard input to FILE, only when it differs: an unchanged wheelhouse is left as it
# is, its directories' times included (the new content is staged outside it).
write_if_changed() {
    local file="$1" new
    new="$(mktemp)"
    cat >"$new"
    if cmp -s "$new" "$file"; then
        rm -f "$new"
    else
        cp "$new" "$file.tmp" && mv "$file.tmp" "$file" && rm -f "$new"
    fi
}

download_dependencies() {
    mkdir -p "$OUTDIR/deps"
    requirements download | write_if_changed "$OUTDIR/deps/requirements.txt"
    requirements base | write_if_changed "$OUTDIR/deps/base-requirements.txt"
    if [ -n "$CONSTRAINTS" ]; then
        write_if_changed "$OUTDIR/deps/constraints.txt" <"$REPO/$CONSTRAINTS"
    else
        write_if_changed "$OUTDIR/deps/constraints.txt" </dev/null
    fi
    make_base_stubs
    # Resolving from the wheelhouse alone is the cache check: it also notices a
    # changed requirement or constraint, or a wheel removed by hand.
    if pip_download --no-index >/dev/null 2>&1; then
        say "dependencies of $BACKEND already in $OUTDIR/deps, nothing to download"
        return
    fi
    say "downloading dependencies of $BACKEND (Python $TARGET_PYTHON, glibc <= $TARGET_GLIBC)"
    pip_download || die "pip could not download the dependencies of $BACKEND (see above)"
}

# The host wheelhouse's dependency layer also as one archive, OUTDIR/deps.tar: a host
# copies one file rather than one per wheel, each a round trip of most of a second
# (roles/lem_host/tasks/venv.yml). Rewritten, by a rename, only when the layer changed.
archive_dependencies() {
    local listing
    listing="$(cd "$OUTDIR/deps" && find . -maxdepth 1 -type f -printf '%P %s %T@\n' | LC_ALL=C sort)"
    if [ -f "$OUTDIR/deps.tar" ] && [ "$(cat "$OUTDIR/deps.tar.listing" 2>/dev/null)" = "$listing" ]; then
        return
    fi
    (cd "$OUTDIR/deps" && find . -maxdepth 1 -type f -printf '%P\n' | LC_ALL=C sort |
        tar --create --file "$OUTDIR/.deps.tar.tmp" --owner=0 --group=0 --numeric-owner \
            --mtime=@315532800 --files-from=-) || die "could not archive $OUTDIR/deps"
    mv "$OUTDIR/.deps.tar.tmp" "$OUTDIR/deps.tar"
    echo "$listing" >"$OUTDIR/deps.tar.listing"
    say "archived the dependency layer in $OUTDIR/deps.tar"
}

# Everything the package wheel is made from, by content.
package_inputs_hash() {
    (
        cd "$REPO"
        {
            echo "${SOURCE_DATE_EPOCH:-}"
            cat pyproject.toml README.md
            find src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' \
                -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        } | sha256sum | cut -c1-16
    )
}

# The package wheel: the layer that changes, rebuilt only when its sources did.
build_package_wheel() {
    local inputs
    inputs="$(package_inputs_hash)"
    if [ "$(cat "$OUTDIR/lem/.inputs-hash" 2>/dev/null)" = "$inputs" ] &&
        compgen -G "$OUTDIR/lem/llenergymeasure-*.whl" >/dev/null; then
        say "package wheel up to date (sources $inputs)"
        return
    fi
    local isolation=()
    # The interpreter's own setuptools is enough when recent: no build env to fetch.
    if "$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' \
        2>/dev/null; then
        isolation=(--no-build-isolation)
    fi
    staging="$(mktemp -d)"
    SCRATCH+=("$staging")
    "$PY" -m pip wheel --quiet --no-deps "${isolation[@]}" --wheel-dir "$staging" "$REPO" ||
        die "pip could not build the llenergymeasure wheel from $REPO"
    mkdir -p "$OUTDIR/lem"
    local wheel
    wheel="$(basename "$staging"/llenergymeasure-*.whl)"
    # Same directory, so the rename is atomic; a wheel of another version goes after.
    mv "$staging/$wheel" "$OUTDIR/lem/.$wheel.tmp"
    mv "$OUTDIR/lem/.$wheel.tmp" "$OUTDIR/lem/$wheel"
    find "$OUTDIR/lem" -maxdepth 1 -name 'llenergymeasure-*.whl' ! -name "$wheel" -delete
    echo "$inputs" >"$OUTDIR/lem/.inputs-hash"
    say "built $wheel"
}

# One build at a time per wheelhouse: concurrent campaigns (or test runs) share it.
exec 9>>"$OUTDIR/.lock"
flock 9

download_dependencies
[ "$BACKEND" != host ] || archive_dependencies
build_package_wheel
say "wheelhouse ready in $OUTDIR"
