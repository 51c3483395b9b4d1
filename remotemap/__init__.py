"""remotemap: run one loop of Python calls in parallel, here, over SSH, or on a cluster."""

from remotemap._version import __version__
from remotemap.api import remote_imap, remote_map
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

__all__ = [
    "BackendUnavailable",
    "Config",
    "ConfigError",
    "DispatchReport",
    "Executor",
    "GraphError",
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
