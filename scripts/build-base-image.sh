#!/usr/bin/env bash
# Build the offline base image (Debian minbase + python3 + venv) with
# debootstrap and `docker import`: for hosts that cannot reach a registry.
# Skipped when the image already exists. Prints the image tag on stdout.
#
#   LEM_BASE_IMAGE=lem-base:bookworm      tag of the image
#   LEM_DEBIAN_SUITE=bookworm             Debian release to bootstrap
#   LEM_DEBIAN_MIRROR=http://deb.debian.org/debian
set -euo pipefail

BASE_IMAGE="${LEM_BASE_IMAGE:-lem-base:bookworm}"
SUITE="${LEM_DEBIAN_SUITE:-bookworm}"
MIRROR="${LEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-venv,ca-certificates

say() { echo "build-base-image: $*" >&2; }

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "$BASE_IMAGE exists, nothing to do"
    echo "$BASE_IMAGE"
    exit 0
fi

command -v debootstrap >/dev/null || {
    say "error: debootstrap is not installed (apt-get install debootstrap)"
    exit 1
}
[ "$(id -u)" -eq 0 ] || {
    say "error: debootstrap needs root"
    exit 1
}

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
say "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
# apt lists and caches only make the image bigger.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
say "importing $rootfs as $BASE_IMAGE"
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "lem base: debootstrap $SUITE minbase + $PACKAGES" \
    - "$BASE_IMAGE" >/dev/null
echo "$BASE_IMAGE"
