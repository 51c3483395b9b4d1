"""Workflows: steps with prerequisites, run on any mode, resumable; per-subject treatments.

See docs/workflows.md. ``Workflow.add_step`` returns step ids; ``Workflow.run`` runs the
graph and returns a :class:`WorkflowReport`; :func:`dispatch` runs a :class:`Treatment` on
many subjects at once.

The names are imported on first use (PEP 562). A cluster job that runs one step unpickles
``remotemap.workflow.remote_step.call_step``, which loads this package first: importing the
runners here would load the api, the executor and the config on every compute node.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these
    from remotemap.workflow.graph import GraphError, Result, Step
    from remotemap.workflow.report import StepReport, WorkflowFailed, WorkflowReport
    from remotemap.workflow.run import Workflow, run_workflow
    from remotemap.workflow.schedule import (
        GraphBackend,
        GraphPlan,
        StepOutcome,
        run_here,
        run_on_executor,
    )
    from remotemap.workflow.store import RunDirectoryBusy
    from remotemap.workflow.treatment import (
        DispatchReport,
        SubjectOutcome,
        SubjectSteps,
        Treatment,
        add_treatment,
        dispatch,
    )

# public name -> the module that defines it (keep in step with the imports above)
_LAZY: dict[str, str] = {
    "GraphError": "remotemap.workflow.graph",
    "Result": "remotemap.workflow.graph",
    "Step": "remotemap.workflow.graph",
    "StepReport": "remotemap.workflow.report",
    "WorkflowFailed": "remotemap.workflow.report",
    "WorkflowReport": "remotemap.workflow.report",
    "Workflow": "remotemap.workflow.run",
    "run_workflow": "remotemap.workflow.run",
    "GraphBackend": "remotemap.workflow.schedule",
    "GraphPlan": "remotemap.workflow.schedule",
    "StepOutcome": "remotemap.workflow.schedule",
    "run_here": "remotemap.workflow.schedule",
    "run_on_executor": "remotemap.workflow.schedule",
    "RunDirectoryBusy": "remotemap.workflow.store",
    "DispatchReport": "remotemap.workflow.treatment",
    "SubjectOutcome": "remotemap.workflow.treatment",
    "SubjectSteps": "remotemap.workflow.treatment",
    "Treatment": "remotemap.workflow.treatment",
    "add_treatment": "remotemap.workflow.treatment",
    "dispatch": "remotemap.workflow.treatment",
}

__all__ = [
    "DispatchReport",
    "GraphBackend",
    "GraphError",
    "GraphPlan",
    "Result",
    "RunDirectoryBusy",
    "Step",
    "StepOutcome",
    "StepReport",
    "SubjectOutcome",
    "SubjectSteps",
    "Treatment",
    "Workflow",
    "WorkflowFailed",
    "WorkflowReport",
    "add_treatment",
    "dispatch",
    "run_here",
    "run_on_executor",
    "run_workflow",
]


if not TYPE_CHECKING:  # hidden from type checkers, else any misspelt name would type as Any

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'remotemap.workflow' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
