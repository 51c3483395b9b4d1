"""Workflows: steps with prerequisites, run on any mode, resumable; per-subject treatments.

See docs/workflows.md. ``Workflow.add_step`` returns step ids; ``Workflow.run`` runs the
graph and returns a :class:`WorkflowReport`; :func:`dispatch` runs a :class:`Treatment` on
many subjects at once.
"""

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
