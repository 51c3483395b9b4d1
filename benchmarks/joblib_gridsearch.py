"""A scikit-learn ``GridSearchCV`` through joblib's backend "remotemap" on an ssh host, against
``n_jobs=1`` here.

Needs root (it starts a real sshd on 127.0.0.1 for a test user, as the tests do)::

    .venv/bin/python -m benchmarks.joblib_gridsearch [--repeats 1]

The search: an SVC on all of load_digits (1797 samples), C x gamma = 4 x 2 = 8 candidates,
cv=3: 24 fits. The ssh figure is end to end (connecting, asking the host its CPUs, staging
every batch with its data, the fits, removing the run directory); both sides refit the best
candidate here. The ssh host is this machine, so the speedup is bounded by its CPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import joblib
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import GridSearchCV  # type: ignore[import-untyped]
from sklearn.svm import SVC  # type: ignore[import-untyped]

import remotemap
from tests.infra.sshd import SSHServer, ensure_test_user, install_remotemap_for_user

GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": [0.0005, 0.001]}


def search(n_jobs: int | None) -> tuple[float, dict[str, Any]]:
    X, y = load_digits(return_X_y=True)
    started = time.perf_counter()
    found = GridSearchCV(SVC(), GRID, cv=3, n_jobs=n_jobs).fit(X, y)
    return time.perf_counter() - started, found.best_params_


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.joblib_gridsearch needs root to start its sshd; skipped",
              file=sys.stderr)
        return 0
    remotemap.register_joblib()
    user = ensure_test_user()
    python = str(install_remotemap_for_user(user))
    local = [search(1) for _ in range(args.repeats)]
    with SSHServer(user) as server:
        options = {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
                   "python": python}
        with joblib.parallel_config(backend="remotemap", mode="ssh", **options):
            remote = [search(-1) for _ in range(args.repeats)]
    assert {str(p) for _, p in local} == {str(p) for _, p in remote}, (local, remote)
    t_local = min(t for t, _ in local)
    t_remote = min(t for t, _ in remote)
    print(f"GridSearchCV, load_digits (1797 samples), {len(GRID['C']) * len(GRID['gamma'])} "
          f"candidates x cv=3, host CPUs: {len(os.sched_getaffinity(0))}")
    print(f"  n_jobs=1 here:        {t_local:7.2f} s")
    print(f"  ssh host, n_jobs=-1:  {t_remote:7.2f} s   speedup {t_local / t_remote:.2f}x")
    print(f"  best: {local[0][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
