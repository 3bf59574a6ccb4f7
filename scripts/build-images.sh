#!/usr/bin/env bash
# Build a backend image offline and print its tag on stdout (logs go to stderr).
#
#   scripts/build-images.sh [--backend pytorch-cpu|pytorch|vllm|tensorrt]
#                           [--tag TAG] [--base-image IMAGE] [--engine-version X.Y.Z]
#
# pytorch-cpu (the default) starts from the debootstrap base image, built here
# when missing (scripts/build-base-image.sh); the GPU backends start from their
# Dockerfile's upstream image (pulled once when a registry is reachable).
# Python packages come from a wheelhouse (scripts/build-wheelhouse.sh) and
# `docker build --network none` proves the build needs no network.
# Idempotent: the image carries a hash of its inputs (Dockerfile, base image,
# package sources, requirements) as a label; when it matches, nothing is built.
#
# --engine-version (vllm, tensorrt): the image of another engine version (a campaign's
# `vllm.version`; a TensorRT-LLM release): base vllm/vllm-openai:vX.Y.Z or
# nvcr.io/nvidia/tensorrt-llm/release:X.Y.Z (or --base-image: one built from a wheel you
# bring, docs/gpu.md), tag lem-<backend>:<version>-<backend>X.Y.Z, its own wheelhouse
# (DIR/<backend>-X.Y.Z) whose base check pins the engine to X.Y.Z.
#
#   LEM_WHEELHOUSE_DIR=wheelhouse   wheelhouses go to DIR/<backend>
#   LEM_IMAGE_PREFIX=               prefix of the default tag (e.g. "mybranch-": two checkouts
#                                   on one Docker engine then keep tags of their own)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

say() { echo "build-images: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

BACKEND=pytorch-cpu
TAG=
BASE_IMAGE=
ENGINE_VERSION=
while [ $# -gt 0 ]; do
    case "$1" in
    --backend) BACKEND="${2:?--backend needs a value}" && shift 2 ;;
    --tag) TAG="${2:?--tag needs a value}" && shift 2 ;;
    --base-image) BASE_IMAGE="${2:?--base-image needs a value}" && shift 2 ;;
    --engine-version) ENGINE_VERSION="${2:?--engine-version needs X.Y.Z}" && shift 2 ;;
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

case "$BACKEND" in
pytorch-cpu) DOCKERFILE=docker/Dockerfile.pytorch ;;
pytorch | vllm | tensorrt) DOCKERFILE="docker/Dockerfile.$BACKEND" ;;
*) die "unknown backend '$BACKEND' (expected pytorch-cpu, pytorch, vllm or tensorrt)" ;;
esac

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
[ -n "$VERSION" ] || die "no version found in pyproject.toml"
DEFAULT_TAG="${LEM_IMAGE_PREFIX:-}lem-$BACKEND:$VERSION"
WHEELHOUSE="${LEM_WHEELHOUSE_DIR:-$REPO/wheelhouse}/$BACKEND"
if [ -n "$ENGINE_VERSION" ]; then
    [[ "$ENGINE_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+(rc[0-9]+)?$ ]] ||
        die "--engine-version expects X.Y.Z, got '$ENGINE_VERSION'"
    case "$BACKEND" in
    vllm) ENGINE_IMAGE="vllm/vllm-openai:v$ENGINE_VERSION" ENGINE_PACKAGE=vllm ;;
    tensorrt) ENGINE_IMAGE="nvcr.io/nvidia/tensorrt-llm/release:$ENGINE_VERSION" ENGINE_PACKAGE=tensorrt-llm ;;
    *) die "--engine-version is for --backend vllm or tensorrt" ;;
    esac
    DEFAULT_TAG="${LEM_IMAGE_PREFIX:-}lem-$BACKEND:$VERSION-$BACKEND$ENGINE_VERSION"
    WHEELHOUSE="$WHEELHOUSE-$ENGINE_VERSION"
    BASE_IMAGE="${BASE_IMAGE:-$ENGINE_IMAGE}"
    export LEM_ENGINE_PIN="$ENGINE_PACKAGE==$ENGINE_VERSION"
fi
TAG="${TAG:-$DEFAULT_TAG}"

# The image to build on: present locally afterwards, or a clear error.
resolve_base_image() {
    if [ "$BACKEND" = pytorch-cpu ]; then
        BASE_IMAGE="${BASE_IMAGE:-$(scripts/build-base-image.sh)}"
    else
        BASE_IMAGE="${BASE_IMAGE:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$DOCKERFILE")}"
    fi
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
    say "pulling $BASE_IMAGE"
    docker pull "$BASE_IMAGE" >&2 ||
        die "base image $BASE_IMAGE is not here and cannot be pulled; load it with 'docker load' or pass --base-image"
}

# Everything the image is made from; package sources by content, not mtime.
inputs_hash() {
    {
        echo "$BACKEND $TAG"
        docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
        cat "$DOCKERFILE" pyproject.toml scripts/image_requirements.py scripts/base_distributions.py
        [ "$BACKEND" != pytorch-cpu ] || cat requirements/cpu.txt
        find src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
}

# "X.Y glibc-version" of the base image's python3, for the wheelhouse's targets.
probe_base_python() {
    docker run --rm --network none --entrypoint python3 "$BASE_IMAGE" -c \
        'import os, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", os.confstr("CS_GNU_LIBC_VERSION").split()[1])' ||
        die "cannot run python3 in $BASE_IMAGE"
}

# What the base's python3 carries, as JSON in $1: the wheelhouse is resolved against it.
probe_base_distributions() {
    docker run --rm -i --network none --entrypoint python3 "$BASE_IMAGE" - probe \
        <scripts/base_distributions.py >"$1" ||
        die "cannot list the Python distributions of $BASE_IMAGE"
}

resolve_base_image
HASH="$(inputs_hash)"
if [ "$(docker image inspect --format '{{index .Config.Labels "lem.inputs-hash"}}' "$TAG" 2>/dev/null)" = "$HASH" ]; then
    say "$TAG is up to date (inputs $HASH)"
    echo "$TAG"
    exit 0
fi

PREVIOUS_ID="$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
read -r PYTHON_VERSION GLIBC_VERSION <<<"$(probe_base_python)"
BASE_DISTRIBUTIONS="$(mktemp)"
trap 'rm -f "$BASE_DISTRIBUTIONS"' EXIT
probe_base_distributions "$BASE_DISTRIBUTIONS"
say "building $TAG from $BASE_IMAGE (Python $PYTHON_VERSION, glibc $GLIBC_VERSION)"
LEM_WHEEL_PYTHON="$PYTHON_VERSION" LEM_WHEEL_GLIBC="$GLIBC_VERSION" LEM_WHEEL_BASE="$BASE_DISTRIBUTIONS" \
    scripts/build-wheelhouse.sh "$BACKEND" "$WHEELHOUSE"
docker build --network none --file "$DOCKERFILE" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg LEM_BACKEND="$BACKEND" \
    --label lem.inputs-hash="$HASH" --label lem.backend="$BACKEND" \
    --label lem.base-image="$BASE_IMAGE" --tag "$TAG" "$WHEELHOUSE" >&2 ||
    die "docker build of $TAG failed (see above)"
say "built $TAG"
# The image this tag replaced is garbage unless another tag or a container holds
# it (then docker refuses, which is what we want).
if [ -n "$PREVIOUS_ID" ] && [ "$PREVIOUS_ID" != "$(docker image inspect --format '{{.Id}}' "$TAG")" ]; then
    docker rmi "$PREVIOUS_ID" >/dev/null 2>&1 || true
fi
echo "$TAG"
