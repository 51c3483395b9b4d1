"""scikit-learn's ``n_jobs`` on remotemap modes through joblib: the scores of ``n_jobs=1``.

Small on purpose (300 digits, cv=3, a 2-point grid): what is checked is that every fit ran on
the mode and came back right, not how fast.
"""

from __future__ import annotations

import getpass
import os
from functools import cache
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import GridSearchCV, cross_val_score  # type: ignore[import-untyped]
from sklearn.svm import SVC  # type: ignore[import-untyped]

from remotemap.joblib_backend import RemotemapBackend
from tests import cluster_support
from tests.infra.sshd import SSHServer

# Each fit pays scikit-learn's import in a process of its own (about 2 s of CPU here).
pytestmark = pytest.mark.slow

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf

GRID = {"C": [1.0, 10.0]}


@cache
def _digits() -> tuple[Any, Any]:
    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


def _scores() -> tuple[list[float], list[float], dict[str, Any]]:
    """cross_val_score's scores, GridSearchCV's mean test scores and best parameters, with
    whatever joblib backend is active and scikit-learn's default n_jobs=None."""
    X, y = _digits()
    cv = cross_val_score(SVC(gamma=0.001), X, y, cv=3)
    search = GridSearchCV(SVC(gamma=0.001), GRID, cv=3).fit(X, y)
    return list(cv), list(search.cv_results_["mean_test_score"]), search.best_params_


@cache
def _reference() -> tuple[list[float], list[float], dict[str, Any]]:
    with joblib.parallel_config(backend="sequential"):
        return _scores()


def _same_scores_as_sequential(**config: Any) -> None:
    with joblib.parallel_config(backend="remotemap", **config):
        cv, grid, best = _scores()
    ref_cv, ref_grid, ref_best = _reference()
    np.testing.assert_allclose(cv, ref_cv)
    np.testing.assert_allclose(grid, ref_grid)
    assert best == ref_best
    assert min(cv) > 0.8  # the fits really learned something


def test_local_with_dumps_gives_the_sequential_scores() -> None:
    _same_scores_as_sequential(mode="local_with_dumps", n_jobs=2)


@pytest.mark.ssh
def test_ssh_host_gives_the_sequential_scores(sshd_host: SSHServer, remote_python: Path) -> None:
    options: dict[str, Any] = {"hosts": [sshd_host.alias], "ssh_config": str(sshd_host.ssh_config),
               "python": str(remote_python)}
    # The host's n_jobs is unset (0): its CPUs, asked of the host before the first batch.
    assert RemotemapBackend(mode="ssh", **options).slots() == len(os.sched_getaffinity(0))
    with joblib.parallel_config(backend="remotemap", mode="ssh", **options):
        users = Parallel(n_jobs=2)(delayed(getpass.getuser)() for _ in range(2))
    assert users == ["rmtest", "rmtest"]  # the host's login user ran them, not this one
    _same_scores_as_sequential(mode="ssh", **options)


def test_cluster_local_scheduler_gives_the_sequential_scores(swf: None, runs_dir: Path) -> None:
    # cross_val_score only: each fit is a job of its own here (about 8 s each on 2 busy cores),
    # and the grid search adds nothing the other modes do not check.
    X, y = _digits()
    with joblib.parallel_config(backend="remotemap", mode="cluster", scheduler="local",
                                shared_dir=str(runs_dir)):
        cv = cross_val_score(SVC(gamma=0.001), X, y, cv=3)
    np.testing.assert_allclose(cv, _reference()[0])
    assert min(cv) > 0.8
