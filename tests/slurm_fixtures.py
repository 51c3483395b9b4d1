"""pytest fixtures for a real single-node SLURM (see tests/infra/slurm.py).

Load with ``pytest_plugins = ["tests.slurm_fixtures"]`` in tests/conftest.py.

Tests that need the cluster skip, with the reason, when not run as root or when the packages
are missing (install them with ``scripts/install-slurm.sh``). With ``REMOTEMAP_REQUIRE_SLURM=1``
(CI sets it) they fail instead, so a broken install cannot pass as skipped.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.infra.slurm import SingleNodeSlurm, missing_commands

REQUIRE_ENV = "REMOTEMAP_REQUIRE_SLURM"

__all__ = [
    "REQUIRE_ENV",
    "require_soma_workflow",
    "rmtest_can_submit",
    "skip_or_fail",
    "slurm_cluster",
    "slurm_env",
]


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``REMOTEMAP_REQUIRE_SLURM=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def slurm_unavailable_reason() -> str | None:
    """Why a private SLURM cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "a private SLURM needs root (slurmd runs the jobs)"
    missing = missing_commands()
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing): run scripts/install-slurm.sh"
    return None


def require_soma_workflow() -> None:
    """Skip (or fail, see :func:`skip_or_fail`) when soma-workflow is not importable."""
    if importlib.util.find_spec("soma_workflow") is None:
        skip_or_fail("soma-workflow not installed: run scripts/install-slurm.sh")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SingleNodeSlurm]:
    """One private SLURM (munge, MariaDB, slurmdbd, slurmctld, slurmd) for the session."""
    reason = slurm_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    with SingleNodeSlurm() as cluster:
        yield cluster


@pytest.fixture
def slurm_env(slurm_cluster: SingleNodeSlurm, monkeypatch: pytest.MonkeyPatch) -> SingleNodeSlurm:
    """The cluster, with its ``SLURM_CONF`` exported to this process for the test's duration.

    Needed by code that runs the SLURM clients with the inherited environment (soma-workflow).
    """
    for name, value in slurm_cluster.client_env().items():
        monkeypatch.setenv(name, value)
    return slurm_cluster


@pytest.fixture
def rmtest_can_submit(slurm_cluster: SingleNodeSlurm, remote_python: Path) -> Iterator[Path]:
    """Let the ssh test user submit to the private SLURM: it must read slurm.conf and reach the
    job scripts in slurmd's spool (the munge socket is open to all). soma-workflow and psutil
    are in its venv already (tests/infra/login_user.py REMOTE_EXTRAS)."""
    state = slurm_cluster.state_dir
    dirs = [state / "etc", state / "spool", state / "spool" / "slurmd-localhost"]
    modes = [d.stat().st_mode & 0o777 for d in dirs]
    for d in dirs:
        d.chmod(0o711)
    try:
        yield remote_python
    finally:
        for d, mode in zip(dirs, modes, strict=True):
            d.chmod(mode)
