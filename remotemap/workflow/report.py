"""What a workflow run ends with: every step's state, and why a step did not run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotemap.errors import RemotemapError, TaskFailure

DONE = "done"
FAILED = "failed"
NOT_RUN = "not run"
STATES = (DONE, FAILED, NOT_RUN)


@dataclass
class StepReport:
    """One step's outcome: ``state`` is ``"done"``, ``"failed"`` or ``"not run"``."""

    id: int
    name: str
    state: str
    #: Why: the error of a failed step, what stopped a step that did not run ("" when done).
    reason: str = ""
    value: Any = field(default=None, repr=False)
    #: The failure as the worker saw it (traceback, host), for a failed step.
    failure: TaskFailure | None = field(default=None, repr=False)
    #: Done in an earlier run of the same run directory, not run again.
    reused: bool = False
    #: For a step that did not run: the failed steps that stopped it.
    blocked_by: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == DONE

    def line(self, width: int = 0) -> str:
        state = f"{self.state} (reused)" if self.reused else self.state
        text = f"{self.id:>4}  {self.name:<{width}}  {state}"
        return f"{text}: {self.reason}" if self.reason and not self.ok else text


class WorkflowFailed(RemotemapError):
    """Raised by :meth:`WorkflowReport.raise_if_failed`; ``report`` holds every step."""

    def __init__(self, report: WorkflowReport) -> None:
        super().__init__(str(report))
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.report,))


@dataclass
class WorkflowReport:
    """Every step's state after :meth:`Workflow.run`, in step id order."""

    name: str
    mode: str
    steps: list[StepReport]
    #: The run directory (``run_dir=``), where rerunning resumes; None when none was given.
    run_dir: Path | None = None
    #: Whether the run was stopped (Ctrl-C) before every step could run.
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def __getitem__(self, step_id: int) -> StepReport:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"no step {step_id!r} in workflow {self.name!r}")

    def __iter__(self) -> Iterator[StepReport]:
        return iter(self.steps)

    def value(self, step_id: int) -> Any:
        """The value of a step that is done; ValueError saying why for any other."""
        step = self[step_id]
        if not step.ok:
            raise ValueError(f"step {step_id} {step.name!r} has no value: {step.state}: "
                             f"{step.reason}")
        return step.value

    def in_state(self, state: str) -> list[StepReport]:
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(map(repr, STATES))}, "
                             f"got {state!r}")
        return [step for step in self.steps if step.state == state]

    def counts(self) -> dict[str, int]:
        return {state: len(self.in_state(state)) for state in STATES}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items() if n)
        stopped = " (interrupted)" if self.interrupted else ""
        return f"workflow {self.name!r} on {self.mode}: {counts or 'no steps'}{stopped}"

    def __str__(self) -> str:
        width = max((len(step.name) for step in self.steps), default=0)
        lines = [self.summary(), *(f"  {step.line(width)}" for step in self.steps)]
        if self.run_dir is not None and not self.ok:
            lines.append(f"rerun with run_dir={str(self.run_dir)!r} to run only the steps "
                         "that did not finish")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise :class:`WorkflowFailed` unless every step is done."""
        if not self.ok:
            raise WorkflowFailed(self)
