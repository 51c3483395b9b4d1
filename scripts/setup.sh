#!/usr/bin/env bash
# Install remotemap into ./.venv and run the demo on the default (local) backend.
#   scripts/setup.sh            install, then run `remotemap demo`
#   scripts/setup.sh --no-demo  install only
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"

if [ "${1:-}" != "--no-demo" ]; then
    .venv/bin/remotemap demo
fi
