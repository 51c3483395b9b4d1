#!/usr/bin/env bash
# Install what the real-sshd tests need: an OpenSSH server and client, netcat (to reach the
# second host inside a network namespace), iproute2 (the namespaces themselves), Debian's
# python3-venv (the remote test user's venv) and procps (pgrep, used by the tests remotely).
#
# Idempotent: a fast no-op when everything is installed already. Exits 0 with a message when
# not run as root, so a developer without root simply gets skipped SSH tests.
set -euo pipefail

packages=(openssh-server openssh-client netcat-openbsd iproute2 python3-venv procps)

if [[ "$(id -u)" != 0 ]]; then
    echo "install-sshd.sh: not root, installing nothing (the SSH tests will be skipped)"
    exit 0
fi

source "$(dirname "$0")/apt-lib.sh"
read -r -a missing <<<"$(missing_packages "${packages[@]}")"
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-sshd.sh: already installed: ${packages[*]}"
    exit 0
fi
echo "install-sshd.sh: installing ${missing[*]}"
apt_install "${missing[@]}"

# sshd refuses to start as root without its privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd
echo "install-sshd.sh: done"
