"""What the cluster tests share (tests/test_cluster.py, tests/test_cluster_slurm.py): fixtures
and helpers. A test module takes a fixture by naming it at module level (``runs_dir =
cluster_support.runs_dir``), so each module gets its own module-scoped registry and runs dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap.backends.cluster import cancel
from remotemap.backends.cluster.registry import registered
from tests.infra.slurm import SingleNodeSlurm
from tests.slurm_fixtures import require_soma_workflow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run registry ($XDG_STATE_HOME) in a temp dir for the whole module."""
    path = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-runs")


@pytest.fixture
def swf() -> None:
    require_soma_workflow()


@pytest.fixture
def local(swf: None, runs_dir: Path) -> dict[str, Any]:
    return {"mode": "cluster", "scheduler": "local", "shared_dir": str(runs_dir),
            "progress": False}


def slurm_options(cluster: SingleNodeSlurm, runs_dir: Path) -> dict[str, Any]:
    return {"scheduler": "slurm", "slurm_conf": str(cluster.conf_path),
            "shared_dir": str(runs_dir), "poll_interval": 0.5}


@pytest.fixture
def slurm(swf: None, slurm_cluster: SingleNodeSlurm, runs_dir: Path) -> dict[str, Any]:
    return {"mode": "cluster", "progress": False, **slurm_options(slurm_cluster, runs_dir)}


def detached_run(factory: pytest.TempPathFactory, name: str,
                 submit_it: Callable[[Path], str]) -> Iterator[tuple[str, Path]]:
    """The body of a session fixture holding a run that a ``run_last`` test collects at the
    session's end (a walltime test: SLURM's minute passes while the other tests run).
    ``submit_it(runs_dir)`` submits it, detached; it gets a registry ($XDG_STATE_HOME) of its
    own, since the module's registry is gone by then. Yields the run id and that registry;
    cancels the run if a test left it registered."""
    require_soma_workflow()
    runs = factory.mktemp(f"{name}-runs")
    home = factory.mktemp(f"{name}-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(home))
        run_id = submit_it(runs)
    yield run_id, home
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(home))
        if any(e["run_id"] == run_id for e in registered()):
            cancel(run_id)


def cancel_from_the_cli(cluster: SingleNodeSlurm, run_id: str, n_tasks: int,
                        capsys: pytest.CaptureFixture[str]) -> None:
    """``remotemap cancel RUN`` on a detached run: it says so, none of the run's jobs is
    pending or running any more (killed ones may linger as COMPLETING), and collecting the
    run fails every one of its ``n_tasks`` tasks as cancelled."""
    from remotemap import RemoteException
    from remotemap.backends.cluster import collect
    from remotemap.cli import main as cli_main

    assert cli_main(["cancel", run_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    queue = cluster.run(["squeue", "-h", "-t", "PD,R", "-o", "%j"]).stdout
    assert run_id not in queue
    with pytest.raises(RemoteException) as info:
        collect(run_id, timeout=30, remove=True)
    assert sorted(f.kind for f in info.value.failures) == ["cancelled"] * n_tasks


def env_for_children(state_home: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(state_home), "PYTHONPATH": str(REPO)}


def round_status(run_dir: Path, rnd: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "rounds" / f"{rnd}.status.json").read_text())
    return data


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def no_engine_left(runs_dir: Path, timeout: float = 30.0) -> None:
    """No cluster engine of this test module still runs within ``timeout`` s: they exit with
    their rounds, which may end after the call returned (a call whose every task has its
    outcome leaves the end and the run's removal to its engines: ``cluster.handover``)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["pgrep", "-f", f"cluster_engine start {runs_dir}"],
                             capture_output=True, text=True, check=False).stdout.split()
        if out == [] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out == [], f"engines still running: {out}"


def run_root(run_id: str) -> Path:
    """The run directory of registered run ``run_id``."""
    return Path(next(e for e in registered() if e["run_id"] == run_id)["root"])
