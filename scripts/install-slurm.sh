#!/usr/bin/env bash
# Install what the SLURM tests need: a single-node SLURM with accounting (slurmdbd + MariaDB),
# munge, and soma-workflow (+ psutil) in a Python venv.
#
# Usage: scripts/install-slurm.sh [VENV]   (default VENV: /work/main/.venv)
#
# Idempotent and fast when everything is already there. Nothing is started or enabled here:
# tests/infra/slurm.py starts private daemons with all their state in a temporary directory.
set -euo pipefail

venv="${1:-/work/main/.venv}"
packages=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

if [[ "$(id -u)" != 0 ]]; then
    echo "install-slurm.sh: not root, nothing installed (the SLURM tests will be skipped)"
    exit 0
fi

source "$(dirname "$0")/apt-lib.sh"
read -r -a missing <<<"$(missing_packages "${packages[@]}")"

if ((${#missing[@]})); then
    # Refresh the package lists when they are missing or older than a day.
    lists=/var/lib/apt/lists
    if ! compgen -G "$lists/*_Packages*" >/dev/null \
        || [[ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit)" ]]; then
        echo "install-slurm.sh: apt-get update"
        apt-get update -qq
    fi
    echo "install-slurm.sh: installing ${missing[*]}"
    # policy-rc.d 101 keeps the maintainer scripts from starting system daemons.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    }
    # Lists younger than a day can still name versions the mirror dropped: update, retry once.
    if ! install; then
        echo "install-slurm.sh: install failed, apt-get update and retry"
        apt-get update -qq && install || { ((created_policy)) && rm -f "$policy"; exit 1; }
    fi
    if ((created_policy)); then
        rm -f "$policy"
    fi
else
    echo "install-slurm.sh: SLURM packages already installed"
fi

if [[ -x "$venv/bin/python" ]]; then
    if "$venv/bin/python" -c 'import soma_workflow, psutil' 2>/dev/null; then
        echo "install-slurm.sh: soma-workflow and psutil already in $venv"
    else
        echo "install-slurm.sh: pip install soma-workflow psutil into $venv"
        "$venv/bin/python" -m pip install -q soma-workflow psutil
    fi
else
    echo "install-slurm.sh: no venv at $venv, soma-workflow not installed" >&2
fi
