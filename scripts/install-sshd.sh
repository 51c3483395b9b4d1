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

missing=()
for pkg in "${packages[@]}"; do
    # dpkg-query answers in milliseconds; only packages not fully installed are fetched.
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-sshd.sh: already installed: ${packages[*]}"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Another apt-get (a parallel CI step, unattended upgrades) may hold the dpkg lock: wait for it.
apt_opts=(-o DPkg::Lock::Timeout=600)
install_missing() {
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
}

echo "install-sshd.sh: installing ${missing[*]}"
# Try without refreshing the package lists first: an update costs seconds and is only needed
# on a machine whose lists are absent or stale.
if ! install_missing; then
    apt-get "${apt_opts[@]}" update
    install_missing
fi

# sshd refuses to start as root without its privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd
echo "install-sshd.sh: done"
