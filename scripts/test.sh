#!/usr/bin/env bash
# Run the whole test suite: lint (ruff), types (mypy), then pytest, with the real servers the
# tests need (sshd, SLURM, headless Chromium) installed first when running as root.
#
#   scripts/test.sh [PYTEST ARGS]            the versions pinned in constraints.txt, in .venv
#   scripts/test.sh --newest [PYTEST ARGS]   the newest release of every dependency, in
#                                            .venv-newest: does tomorrow's release break us?
#   scripts/test.sh --oldest [PYTEST ARGS]   remotemap's dependencies at the lower bounds that
#                                            pyproject.toml declares, in .venv-oldest
# The test hosts' venvs (ssh, SLURM) get the same versions.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    --newest)
        shift
        export REMOTEMAP_VENV=.venv-newest REMOTEMAP_CONSTRAINTS="" ;;
    --oldest)
        shift
        export REMOTEMAP_VENV=.venv-oldest REMOTEMAP_CONSTRAINTS="$PWD/.constraints-oldest.txt"
        python3 scripts/constraints.py oldest > "$REMOTEMAP_CONSTRAINTS" ;;
    *)
        export REMOTEMAP_VENV=.venv REMOTEMAP_CONSTRAINTS="$PWD/constraints.txt" ;;
esac
venv=$REMOTEMAP_VENV

scripts/setup.sh --no-demo
if [ "$(id -u)" = 0 ]; then
    for installer in scripts/install-sshd.sh scripts/install-slurm.sh scripts/install-chromium.sh; do
        [ -x "$installer" ] && "$installer" "$PWD/$venv"
    done
else
    echo "not root: the tests that need a real sshd or SLURM will skip, saying why" >&2
fi

echo "== versions: $("$venv/bin/python" -m pip freeze | grep -iE '^(cloudpickle|loky|paramiko|soma-workflow|tomlkit|tqdm)==' | tr '\n' ' ')"
echo "== ruff"
"$venv/bin/ruff" check remotemap tests benchmarks scripts
echo "== mypy"
"$venv/bin/mypy"
echo "== pytest (tests/test_docs_site.py builds the docs site with mkdocs --strict)"
# The slowest tests are listed at the end, to see where the suite's time goes.
"$venv/bin/python" -m pytest -q --durations=60 "$@"
