"""The contract suite's view of each backend: how to call it and what it promises.

The built-in modes, and ``dask`` (declared by remotemap's own entry point), have a ``Runner``
factory each in :data:`RUNNERS` (with the fixtures they need: an sshd, a SLURM cluster, a dask
cluster). Every other registered or installed mode (a plug-in) gets
:func:`plugin_runner`, so every contract test runs against it too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from remotemap import Executor, ModeName, remote_imap, remote_map
from remotemap.backends import backend_names, get_backend_class
from tests.infra.isolated_host import exchange_dir


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
        return remote_map(func, largs, lkwargs, mode=ModeName(self.mode), progress=False,
                          **{**self.options, **options})

    def imap(self, func: Callable[..., Any], largs: Sequence[Any] | None = None,
             **options: Any) -> Iterator[tuple[int, Any]]:
        return remote_imap(func, largs, mode=ModeName(self.mode), progress=False,
                           **{**self.options, **options})

    def executor(self, **options: Any) -> Executor:
        return Executor(ModeName(self.mode), **{**self.options, **options})


def _serial(request: pytest.FixtureRequest) -> Runner:
    return Runner("serial", isolates_crashes=False, pickles=False)


def _local(request: pytest.FixtureRequest) -> Runner:
    return Runner("local", {"n_jobs": 2})


def _dumps(request: pytest.FixtureRequest) -> Runner:
    return Runner("local_with_dumps", {"n_jobs": 2})


def _ssh(request: pytest.FixtureRequest) -> Runner:
    # A host that shares nothing with this process (tests/isolated_fixtures.py): its own
    # files, user, hostname and Python, so a task that needed a caller's path would fail.
    host = request.getfixturevalue("isolated_ssh_host")
    # The remote host has remotemap but not this test suite: send the tests' functions by value.
    import cloudpickle

    import tests.taskfuncs

    cloudpickle.register_pickle_by_value(tests.taskfuncs)
    return Runner("ssh", {**host.options(), "n_jobs": 2}, same_host_python=False)


def ssh_loopback_runner(request: pytest.FixtureRequest) -> Runner:
    """The ssh mode on the loopback sshd, whose user's files the caller reaches: for tests
    that change them from the caller's side (fault injection) or need that user's venv
    (``pytest.mark.ssh_loopback`` makes the ``runner`` fixture use it)."""
    server = request.getfixturevalue("sshd_host")
    python = request.getfixturevalue("remote_python")
    import cloudpickle

    import tests.taskfuncs

    cloudpickle.register_pickle_by_value(tests.taskfuncs)
    options = {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
               "python": str(python), "n_jobs": 2}
    return Runner("ssh", options, same_host_python=False)


def _cluster(request: pytest.FixtureRequest) -> Runner:
    if any(getattr(request.module, flag, False) for flag in LOGIN_HOST_FLAGS):
        return _cluster_on_login_host(request)
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


#: Module flags that send a module's cluster ``runner`` tests through the isolated login host.
#: ``CLUSTER_ON_LOGIN_HOST``: a module outside the contract suite whose tests run there too
#: (their functions must travel by value, their files be in ``shared_dir``).
LOGIN_HOST_FLAGS = ("CONTRACT_SUITE", "CLUSTER_ON_LOGIN_HOST")


def _cluster_on_login_host(request: pytest.FixtureRequest) -> Runner:
    """The contract suite's cluster: submitted through the isolated login host (its own files,
    user, venv and SLURM: tests/infra/host_slurm.py), as a lab's cluster is reached."""
    host = request.getfixturevalue("isolated_cluster_host")
    import cloudpickle

    import tests.taskfuncs

    cloudpickle.register_pickle_by_value(tests.taskfuncs)
    tmp_path = request.getfixturevalue("tmp_path")
    request.getfixturevalue("monkeypatch").setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    options = host.cluster_options(f".cache/remotemap/contract-{tmp_path.name}")
    del options["mode"], options["progress"]
    return Runner("cluster", options, same_host_python=False)


def _dask(request: pytest.FixtureRequest) -> Runner:
    address = request.getfixturevalue("dask_scheduler")
    # The dask workers run tasks with this interpreter on this machine; each chunk in a child
    # process of a worker, so a crash fails its own tasks only.
    return Runner("dask", {"scheduler": address})


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """The address of a real dask.distributed cluster on loopback: a scheduler and two worker
    processes of one thread each, started once, closed (every process) at the end."""
    pytest.importorskip("distributed", reason="mode 'dask' needs distributed: pip install "
                        "'remotemap[dask]' (the test extra has it)")
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


RUNNERS: dict[str, Callable[[pytest.FixtureRequest], Runner]] = {
    "serial": _serial,
    "local": _local,
    "local_with_dumps": _dumps,
    "ssh": _ssh,
    "cluster": _cluster,
    "dask": _dask,
}


def plugin_runner(mode: str) -> Runner:
    """A mode remotemap does not ship, with the config file's settings. What it promises comes
    from its class: a mode that isolates crashes runs tasks out of the caller's process, so
    their arguments and results are pickled; one that does not runs them in the caller's."""
    isolates = get_backend_class(mode).isolates_crashes
    return Runner(mode, isolates_crashes=isolates, pickles=isolates)


def contract_modes() -> list[str]:
    """The built-in modes, then every plug-in mode registered or installed here."""
    return [*RUNNERS, *(name for name in backend_names() if name not in RUNNERS)]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that tasks may write to whichever user they run as (ssh: a test user), and
    on whichever test host: the isolated one sees only this part of the caller's files."""
    path = Path(tempfile.mkdtemp(prefix="remotemap-shared-", dir=exchange_dir()))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


#: Modes that run only the contract suite (the modules that set ``CONTRACT_SUITE = True``) and
#: their own test file, not every test taking ``runner``. dask: its tasks run through the same
#: worker code as ``local_with_dumps``'s, and its cluster makes each test several seconds
#: slower; the contract suite already holds it to every promise.
CONTRACT_ONLY = frozenset({"dask"})


def runner_modes(module: object, node: pytest.Item | None = None) -> list[str]:
    """The modes the ``runner`` tests of ``module`` run on (``node``: the test, whose
    ``pytest.mark.not_on_modes(MODE, ...)`` leaves out the modes it names)."""
    modes = contract_modes()
    if getattr(module, "CONTRACT_SUITE", False):
        return modes
    marker = node.get_closest_marker("not_on_modes") if node is not None else None
    left_out = CONTRACT_ONLY | frozenset(marker.args if marker is not None else ())
    return [mode for mode in modes if mode not in left_out]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "runner" in metafunc.fixturenames:
        modes = runner_modes(metafunc.module, metafunc.definition)
        metafunc.parametrize("runner", modes, indirect=True)


@pytest.fixture
def runner(request: pytest.FixtureRequest) -> Runner:
    if request.param == "ssh" and request.node.get_closest_marker("ssh_loopback"):
        return ssh_loopback_runner(request)
    factory = RUNNERS.get(request.param)
    return factory(request) if factory is not None else plugin_runner(request.param)
