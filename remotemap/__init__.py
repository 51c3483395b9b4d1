"""remotemap: run one loop of Python calls in parallel, here, over SSH, or on a cluster.

The public names are imported on first use (PEP 562), so ``python -m remotemap.worker`` and
the cluster engine, which run this file first, do not load the driver, the config reader or
the workflow runner they never use.
"""

from __future__ import annotations

import importlib
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
    "Mode",
    "ModeName",
    "RemoteException",
    "RemoteTraceback",
    "RemotemapError",
    "Result",
    "TaskFailure",
    "Treatment",
    "Workflow",
    "WorkflowFailed",
    "WorkflowReport",
    "__version__",
    "as_completed",
    "dispatch",
    "load_config",
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
