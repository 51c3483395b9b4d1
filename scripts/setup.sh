#!/usr/bin/env bash
# Install remotemap into ./.venv and run the demo on the default (local) backend.
#   scripts/setup.sh            install, then run `remotemap demo`
#   scripts/setup.sh --no-demo  install only
# The versions installed are those pinned in constraints.txt, so a dependency released after
# the last green run cannot break this install. REMOTEMAP_VENV picks another venv directory;
# REMOTEMAP_CONSTRAINTS another constraints file, or none when empty (the newest releases).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${REMOTEMAP_VENV:-.venv}
constraints=${REMOTEMAP_CONSTRAINTS-constraints.txt}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "$constraints" ]; then
    # PIP_CONSTRAINT, not -c: it also holds for the build environment (setuptools).
    export PIP_CONSTRAINT="$PWD/${constraints#"$PWD/"}"
    "${pip[@]}" pip
else
    unset PIP_CONSTRAINT
    "${pip[@]}" --upgrade pip
    pip+=(--upgrade --upgrade-strategy eager)
fi
"${pip[@]}" -e ".[test]"

if [ "${1:-}" != "--no-demo" ]; then
    "$venv/bin/remotemap" demo
fi
