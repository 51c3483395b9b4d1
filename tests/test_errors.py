"""One error root: every exception class remotemap defines derives from RemotemapError, keeps
its older built-in base, and survives pickling (errors cross process boundaries)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import typing
from collections.abc import Callable
from types import ModuleType

import pytest

import remotemap
from remotemap.backends.cluster.checks import EngineError
from remotemap.backends.cluster.files import ClusterError
from remotemap.backends.cluster.limits import PartitionRefused
from remotemap.backends.remote_files import RemoteSetupError
from remotemap.backends.staging import CannotSend
from remotemap.cli.runs_plot import NoRenderer
from remotemap.config.modes import ModeLoadError
from remotemap.errors import (
    BackendUnavailable,
    ConfigError,
    FailureKind,
    RemoteException,
    RemotemapError,
    TamperedFile,
    TaskFailure,
    TaskTimeout,
    UnsafePath,
)
from remotemap.executor import RemoteTraceback
from remotemap.locks import RunDirectoryBusy
from remotemap.run_index import RunNotFinished, RunNotFound
from remotemap.runs import FunctionChanged
from remotemap.server_client import WorkerServerGone
from remotemap.ssh.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    HostUnreachable,
    RemoteCommandFailed,
    SSHError,
)
from remotemap.workflow.graph import GraphError
from remotemap.workflow.remote_step import PrerequisiteUnavailable
from remotemap.workflow.report import StepReport, WorkflowFailed, WorkflowReport

#: Exceptions that never reach a caller, so they need not share the root.
INTERNAL = {
    # Raised and caught inside fingerprint's walk: an object with no stable description makes
    # its task unique instead; callers never see it.
    "remotemap.fingerprint._Unhashable",
    # The cluster engine's own stop signal (run directory or scheduler config gone): caught in
    # cluster.engine.serve, which prints it to the round's log and exits 1.
    "remotemap.backends.cluster.engine.Abandoned",
    # A closing ssh session's signal to a file upload on its way: caught in backends/ssh.py
    # and staging.py, which then clean the staging area up.
    "remotemap.backends.staging.StagingStopped",
    # dumps_plain's signal that an object is not plain: caught there, which returns None.
    "remotemap.plain._NotPlain",
}


def _module_names() -> list[str]:
    names = ["remotemap"]
    names += [info.name for info in pkgutil.walk_packages(remotemap.__path__, "remotemap.",
                                                          onerror=lambda name: None)]
    return sorted(names)


def _try_import(name: str) -> ModuleType | str:
    """The module, or why it cannot be imported here: the optional dependency it misses."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "remotemap" or missing.startswith("remotemap."):
            raise  # a module of ours that is gone is a bug, not an optional dependency
        return f"{name} needs {missing!r}, which is not installed"


def _exception_classes(module: ModuleType) -> list[type[BaseException]]:
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BaseException)
            and obj.__module__ == module.__name__]


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.mark.parametrize("name", _module_names())
def test_every_exception_class_derives_from_remotemap_error(name: str) -> None:
    module = _try_import(name)
    if isinstance(module, str):
        pytest.skip(module)
    for cls in _exception_classes(module):
        if _qualname(cls) in INTERNAL:
            assert not issubclass(cls, RemotemapError), f"{_qualname(cls)} is no longer internal"
            continue
        assert issubclass(cls, RemotemapError), f"{_qualname(cls)} does not derive from " \
            "RemotemapError (or add it to INTERNAL, saying why no caller ever sees it)"


def test_the_internal_allow_list_names_classes_that_exist() -> None:
    for qualname in INTERNAL:
        module_name, _, class_name = qualname.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module_name), class_name), type)


def _failure() -> TaskFailure:
    return TaskFailure(3, "ValueError", "bad input", "Traceback ...\nValueError: bad input",
                       host="node7", kind="exception")


def _ssh(cls: type[SSHError]) -> Callable[[], RemotemapError]:
    return lambda: cls("cannot go on", host="login", port=2222, user="alice", reason="refused",
                       argv=["true"])


#: One instance of every RemotemapError subclass, as remotemap builds them.
SAMPLES: dict[type[RemotemapError], Callable[[], RemotemapError]] = {
    RemotemapError: lambda: RemotemapError("something went wrong"),
    RemoteException: lambda: RemoteException([_failure()], [1, 2, 3, None]),
    ConfigError: lambda: ConfigError("unknown key", path="/etc/remotemap.toml", key="ssh.hots"),
    BackendUnavailable: lambda: BackendUnavailable("soma-workflow is not installed"),
    ModeLoadError: lambda: ModeLoadError("mode 'threads' (entry point 'threads = m:C' of "
                                         "distribution 'remotemap-threads 1.0'): no module 'm'"),
    TaskTimeout: lambda: TaskTimeout("the task ran longer than its timeout of 1 s"),
    UnsafePath: lambda: UnsafePath("/tmp/run", "writable by group"),
    TamperedFile: lambda: TamperedFile("/tmp/run/outcomes/000001.pkl"),
    RemoteTraceback: lambda: RemoteTraceback(_failure()),
    RunDirectoryBusy: lambda: RunDirectoryBusy("/tmp/run is used by pid 42 on node7"),
    FunctionChanged: lambda: FunctionChanged("/tmp/run holds results of f, not g"),
    GraphError: lambda: GraphError("step 2 needs unknown step 9", step=2),
    PrerequisiteUnavailable: lambda: PrerequisiteUnavailable("step 1's outcome is missing"),
    WorkflowFailed: lambda: WorkflowFailed(WorkflowReport(
        "wf", "serial", [StepReport(1, "load", "failed", reason="ValueError: bad input")])),
    EngineError: lambda: EngineError("no round 2 in /tmp/run"),
    ClusterError: lambda: ClusterError("the run directory /tmp/run was removed"),
    RemoteSetupError: lambda: RemoteSetupError("login: no python3 on PATH"),
    WorkerServerGone: lambda: WorkerServerGone("the worker server on node7 stopped answering"),
    PartitionRefused: lambda: PartitionRefused(
        "cluster.walltime '2:00:00' exceeds partition 'short' MaxTime 00:01:00",
        key="cluster.walltime", partition="short"),
    CannotSend: lambda: CannotSend("data/sub-01.nii.gz: no such file"),
    NoRenderer: lambda: NoRenderer("no chromium on PATH: apt-get install chromium"),
    RunNotFound: lambda: RunNotFound("no kept run has the id 20261129-1200"),
    RunNotFinished: lambda: RunNotFinished("20261129-1200", [1, None, 3], [1], [_failure()]),
    **{cls: _ssh(cls) for cls in (SSHError, HostUnreachable, AuthenticationFailed, HostKeyError,
                                  HostKeyUnknown, HostKeyChanged, CommandTimeout,
                                  RemoteCommandFailed)},
}


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda cls: cls.__qualname__)
def test_every_error_survives_pickling(cls: type[RemotemapError]) -> None:
    error = SAMPLES[cls]()
    assert type(error) is cls
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and isinstance(copy, RemotemapError)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)  # data (task, path, host, key...) kept, not just the text


def test_every_error_class_has_a_pickling_sample() -> None:
    modules = [_try_import(name) for name in _module_names()]
    found = {cls for module in modules if not isinstance(module, str)
             for cls in _exception_classes(module)}
    missing = {_qualname(cls) for cls in found - set(SAMPLES)} - INTERNAL
    assert not missing, f"add a sample to SAMPLES for {sorted(missing)}"


@pytest.mark.parametrize(("cls", "builtin"), [
    (BackendUnavailable, RuntimeError), (RunDirectoryBusy, RuntimeError),
    (PrerequisiteUnavailable, RuntimeError), (EngineError, RuntimeError),
    (ClusterError, RuntimeError), (RemoteSetupError, RuntimeError), (ModeLoadError, ImportError),
    (WorkerServerGone, RuntimeError), (FunctionChanged, ValueError), (GraphError, ValueError),
], ids=lambda value: value.__qualname__)
def test_errors_keep_the_builtin_base_callers_catch(
        cls: type[RemotemapError], builtin: type[Exception]) -> None:
    with pytest.raises(builtin):
        raise SAMPLES[cls]()


def test_every_failure_kind_is_documented() -> None:
    doc = TaskFailure.__doc__ or ""
    kinds = typing.get_args(FailureKind)
    assert "exception" in kinds and "backend" in kinds
    undocumented = [kind for kind in kinds if f'``"{kind}"``' not in doc]
    assert not undocumented, f"TaskFailure's docstring does not explain {undocumented}"
