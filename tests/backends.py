"""The contract suite's view of each backend: how to call it and what it promises.

A backend added later (ssh, cluster) adds a ``Runner`` factory here; every contract test then
runs against it too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from remotemap import Executor, remote_imap, remote_map


@dataclass
class Runner:
    mode: str
    options: dict[str, Any] = field(default_factory=dict)
    #: A task that kills its process fails alone (serial: it would kill the test run).
    isolates_crashes: bool = True
    #: Arguments and results cross a process boundary, so unpicklable ones fail their task.
    pickles: bool = True
    #: Tasks see this process's sys.path and files (False: they run on another host).
    same_host_python: bool = True

    def map(self, func: Callable[..., Any], largs: Sequence[Any] | None = None,
            lkwargs: Sequence[Mapping[str, Any]] | None = None, **options: Any) -> list[Any]:
        return remote_map(func, largs, lkwargs, mode=self.mode, progress=False,
                          **{**self.options, **options})

    def imap(self, func: Callable[..., Any], largs: Sequence[Any] | None = None,
             **options: Any) -> Iterator[tuple[int, Any]]:
        return remote_imap(func, largs, mode=self.mode, progress=False,
                           **{**self.options, **options})

    def executor(self, **options: Any) -> Executor:
        return Executor(self.mode, **{**self.options, **options})


def _serial(request: pytest.FixtureRequest) -> Runner:
    return Runner("serial", isolates_crashes=False, pickles=False)


def _local(request: pytest.FixtureRequest) -> Runner:
    return Runner("local", {"n_jobs": 2})


def _dumps(request: pytest.FixtureRequest) -> Runner:
    return Runner("local_with_dumps", {"n_jobs": 2})


def _ssh(request: pytest.FixtureRequest) -> Runner:
    server = request.getfixturevalue("sshd_host")
    python = request.getfixturevalue("remote_python")
    # The remote host has remotemap but not this test suite: send the tests' functions by value.
    import cloudpickle

    import tests.taskfuncs

    cloudpickle.register_pickle_by_value(tests.taskfuncs)
    options = {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
               "python": str(python), "n_jobs": 2}
    return Runner("ssh", options, same_host_python=False)


def _cluster(request: pytest.FixtureRequest) -> Runner:
    from tests.slurm_fixtures import require_soma_workflow

    require_soma_workflow()
    cluster = request.getfixturevalue("slurm_cluster")
    tmp_path = request.getfixturevalue("tmp_path")
    runs = tmp_path / "cluster-runs"
    # The run registry goes to $XDG_STATE_HOME: keep the real one untouched.
    request.getfixturevalue("monkeypatch").setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    options = {"scheduler": "slurm", "slurm_conf": str(cluster.conf_path),
               "shared_dir": str(runs), "poll_interval": 0.5}
    # Each task's process is a SLURM job's: a crash ends that job only. The jobs run on this
    # machine with this interpreter, and get this process's sys.path.
    return Runner("cluster", options, isolates_crashes=True, pickles=True,
                  same_host_python=True)


RUNNERS: dict[str, Callable[[pytest.FixtureRequest], Runner]] = {
    "serial": _serial,
    "local": _local,
    "local_with_dumps": _dumps,
    "ssh": _ssh,
    "cluster": _cluster,
}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that tasks may write to whichever user they run as (ssh: a test user)."""
    path = Path(tempfile.mkdtemp(prefix="remotemap-shared-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param](request)
