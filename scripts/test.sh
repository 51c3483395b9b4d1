#!/usr/bin/env bash
# Run the whole test suite: lint (ruff), types (mypy), then pytest, with the real servers the
# tests need (sshd, SLURM) installed first when running as root. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-demo
if [ "$(id -u)" = 0 ]; then
    for installer in scripts/install-sshd.sh scripts/install-slurm.sh; do
        [ -x "$installer" ] && "$installer" "$PWD/.venv"
    done
else
    echo "not root: the tests that need a real sshd or SLURM will skip, saying why" >&2
fi

echo "== ruff"
.venv/bin/ruff check remotemap tests benchmarks scripts
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
