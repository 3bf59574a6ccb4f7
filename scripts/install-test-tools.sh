#!/usr/bin/env bash
# Install the system tools the test suite needs beyond Python and Docker:
#   /usr/sbin/sshd, ssh, ssh-keygen  tests over real SSH (test_two_hosts_ssh.py,
#                                    test_faults_hosts.py, test_faults_ssh_controller.py)
#   chromium                         the report's browser test (tests/fixtures/browser.py)
# Idempotent: apt-get runs only when a tool is missing, so a second run takes a second.
# Called by scripts/test.sh before pytest.
#
#   LEM_TEST_TOOLS_INSTALL=0   never install (fail, naming what is missing)
# (as_root and apt_install repeat install-docker.sh's: that script must stay one file,
# Ansible's script module copies it to the hosts alone.)
set -euo pipefail

say() { echo "install-test-tools: $*" >&2; }
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

# tool path -> Debian package that provides it
declare -A PACKAGE_OF=(
    [/usr/sbin/sshd]=openssh-server
    [/usr/bin/ssh]=openssh-client
    [/usr/bin/ssh-keygen]=openssh-client
    [/usr/bin/chromium]=chromium
)

missing_packages() {
    local tool
    for tool in "${!PACKAGE_OF[@]}"; do
        [ -x "$tool" ] || echo "${PACKAGE_OF[$tool]}"
    done | sort -u
}

mapfile -t packages < <(missing_packages)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
[ "${LEM_TEST_TOOLS_INSTALL:-1}" != 0 ] ||
    die "missing ${packages[*]} and LEM_TEST_TOOLS_INSTALL=0 forbids installing them"
command -v apt-get >/dev/null ||
    die "missing ${packages[*]} and this machine has no apt-get: install them by hand"
say "installing ${packages[*]} with apt-get"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
mapfile -t still_missing < <(missing_packages)
[ ${#still_missing[@]} -eq 0 ] || die "still missing after apt-get: ${still_missing[*]}"
say "installed ${packages[*]}"
