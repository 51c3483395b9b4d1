"""remotemap: run one loop of Python calls in parallel, here, over SSH, or on a cluster.

The public names are imported on first use (PEP 562), so ``python -m remotemap.worker`` and
the cluster engine, which run this file first, do not load the driver, the config reader or
the workflow runner they never use.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from remotemap._version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these
    from remotemap.api import remote_imap, remote_map
    from remotemap.call_options import Mode, ModeName
    from remotemap.config import Config, load_config
    from remotemap.errors import (
        BackendUnavailable,
        ConfigError,
        RemoteException,
        RemotemapError,
        TaskFailure,
    )
    from remotemap.executor import Executor, RemoteTraceback, as_completed
    from remotemap.joblib_backend import register_joblib
    from remotemap.run_index import LoadedRun, RunNotFinished, RunSummary, load_run
    from remotemap.workflow import (
        DispatchReport,
        GraphError,
        Result,
        Treatment,
        Workflow,
        WorkflowFailed,
        WorkflowReport,
        dispatch,
    )

# public name -> the module that defines it (keep in step with the imports above)
_LAZY: dict[str, str] = {
    "remote_imap": "remotemap.api",
    "remote_map": "remotemap.api",
    "Mode": "remotemap.call_options",
    "ModeName": "remotemap.call_options",
    "Config": "remotemap.config",
    "load_config": "remotemap.config",
    "BackendUnavailable": "remotemap.errors",
    "ConfigError": "remotemap.errors",
    "RemoteException": "remotemap.errors",
    "RemotemapError": "remotemap.errors",
    "TaskFailure": "remotemap.errors",
    "Executor": "remotemap.executor",
    "RemoteTraceback": "remotemap.executor",
    "as_completed": "remotemap.executor",
    "register_joblib": "remotemap.joblib_backend",
    "LoadedRun": "remotemap.run_index",
    "RunNotFinished": "remotemap.run_index",
    "RunSummary": "remotemap.run_index",
    "load_run": "remotemap.run_index",
    **{
        name: "remotemap.workflow"
        for name in (
            "DispatchReport",
            "GraphError",
            "Result",
            "Treatment",
            "Workflow",
            "WorkflowFailed",
            "WorkflowReport",
            "dispatch",
        )
    },
}

__all__ = [
    "BackendUnavailable",
    "Config",
    "ConfigError",
    "DispatchReport",
    "Executor",
    "GraphError",
    "LoadedRun",
    "Mode",
    "ModeName",
    "RemoteException",
    "RemoteTraceback",
    "RemotemapError",
    "Result",
    "RunNotFinished",
    "RunSummary",
    "TaskFailure",
    "Treatment",
    "Workflow",
    "WorkflowFailed",
    "WorkflowReport",
    "__version__",
    "as_completed",
    "dispatch",
    "load_config",
    "load_run",
    "register_joblib",
    "remote_imap",
    "remote_map",
]


if not TYPE_CHECKING:  # hidden from type checkers, else any misspelt name would type as Any

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'remotemap' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# -- logging: `logging.getLogger("remotemap").setLevel(logging.DEBUG)` prints, as documented -
# A library's records reach stderr by themselves only through logging.lastResort, which
# prints WARNING and above whatever level was asked for: the documented one-liner would print
# nothing. remotemap's logger has this handler instead: it prints whatever the logger's own
# level lets through, and only while the application has configured no handler on the
# record's way up (once it has, records go there and only there, never twice). Like
# lastResort it writes to the sys.stderr of the moment.


class _StderrUntilConfigured(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if _configured(logging.getLogger(record.name), self):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _configured(logger: logging.Logger | None, ours: logging.Handler) -> bool:
    """Whether a record of ``logger`` reaches a handler other than ``ours``."""
    while logger is not None:
        if any(handler is not ours for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def _log_to_stderr() -> None:
    logger = logging.getLogger("remotemap")
    if not any(isinstance(h, _StderrUntilConfigured) for h in logger.handlers):
        handler = _StderrUntilConfigured()
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        logger.addHandler(handler)


_log_to_stderr()


# -- joblib's backend "remotemap", registered without importing joblib -----------------------
# joblib is registered with at once if loaded, else by a finder that wraps the loader of
# joblib.parallel (the module that holds joblib's backend table) and registers once that
# module has run, then leaves sys.meta_path (a failed import leaves it for the next try).
# What it registers is a factory that imports remotemap.joblib_backend only when a Parallel
# call uses it: `import remotemap` stays light.
# Hand-written (wrapt's post-import hooks would do it) so that remotemap needs no dependency
# for it and loads no module here.


def _joblib_backend_factory(*args: Any, **kwargs: Any) -> Any:
    from remotemap.joblib_backend import RemotemapBackend

    return RemotemapBackend(*args, **kwargs)


def _register_in(parallel: Any) -> None:
    parallel.register_parallel_backend("remotemap", _joblib_backend_factory)


class _JoblibLoader:
    """joblib.parallel's own loader, registering remotemap once the module has run."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_code...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        _register_in(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _JoblibFinder)]


class _JoblibFinder:
    """On sys.meta_path until joblib.parallel has run: gives the spec the other finders find,
    its loader wrapped."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "joblib.parallel":
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _JoblibLoader(spec.loader)
                return spec
        return None


def _hook_joblib() -> None:
    parallel = sys.modules.get("joblib.parallel")
    if parallel is not None and hasattr(parallel, "register_parallel_backend"):
        _register_in(parallel)
    elif not any(isinstance(finder, _JoblibFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _JoblibFinder())


_hook_joblib()
