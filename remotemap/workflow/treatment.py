"""Per-subject treatments: split -> one step per part -> merge -> fetch -> clean, many subjects.

What pyhrf's ``prepare_treatment_jobs`` and ``run_soma_workflow`` set out to do, as one
workflow: each subject gets its own chain of steps, starting from no prerequisite, so a
subject that fails (a missing file, a part that raises) stops only its own chain::

    split(subject) -> process(part 0) ... process(part n-1) -> merge -> fetch -> clean
                      (in parallel)                             (here)   (always)

``split``, ``process``, ``merge`` and ``clean`` run on the mode's workers; ``fetch`` runs in
the calling process, where it puts the merged result (a file, say); ``clean`` runs even when
a step before it failed, to remove whatever the treatment left where the workers run.
The treatment object is pickled with each step, so its class must be importable where the
steps run (or registered with ``cloudpickle.register_pickle_by_value``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from remotemap.workflow.graph import Result
from remotemap.workflow.report import DONE, FAILED, StepReport, WorkflowReport
from remotemap.workflow.run import Workflow

SubjectT = TypeVar("SubjectT")
PartT = TypeVar("PartT")
PartResultT = TypeVar("PartResultT")
MergedT = TypeVar("MergedT")


class Treatment(ABC, Generic[SubjectT, PartT, PartResultT, MergedT]):
    """One analysis, split in parts, for any number of subjects."""

    #: How many parts ``split`` makes of a subject (unless :meth:`count_parts` says otherwise).
    n_parts: int = 1

    def label(self, subject: SubjectT) -> str:
        """How reports name the subject (unique within one dispatch)."""
        return str(subject)

    def count_parts(self, subject: SubjectT) -> int:
        """How many parts ``split`` will return. Runs here while the workflow is built, before
        any data is read, so it must be cheap; the split step fails if the count is wrong."""
        return self.n_parts

    @abstractmethod
    def split(self, subject: SubjectT) -> Sequence[PartT]:
        """The subject's data cut in ``count_parts(subject)`` parts (on a worker)."""

    @abstractmethod
    def process(self, part: PartT) -> PartResultT:
        """The analysis of one part (on a worker; the parts of a subject run in parallel)."""

    @abstractmethod
    def merge(self, subject: SubjectT, results: list[PartResultT]) -> MergedT:
        """One result from every part's result, in part order (on a worker)."""

    def fetch(self, subject: SubjectT, merged: MergedT) -> Any:
        """Put the merged result where the caller is (runs here); its return value is the
        subject's result. By default the merged result itself."""
        return merged

    def clean(self, subject: SubjectT) -> None:
        """Remove what the treatment left where the workers run (runs even after a failure)."""


def split_checked(treatment: Treatment[Any, Any, Any, Any], subject: Any,
                  n_parts: int) -> list[Any]:
    """``treatment.split(subject)``, checked against the count the workflow was built for."""
    parts = list(treatment.split(subject))
    if len(parts) != n_parts:
        raise ValueError(f"{type(treatment).__name__}.split returned {len(parts)} parts for "
                         f"{treatment.label(subject)!r}; count_parts said {n_parts}")
    return parts


@dataclass(frozen=True)
class SubjectSteps:
    """The step ids of one subject's chain."""

    label: str
    split: int
    parts: tuple[int, ...]
    merge: int
    fetch: int
    clean: int

    @property
    def all(self) -> tuple[int, ...]:
        return (self.split, *self.parts, self.merge, self.fetch, self.clean)


def add_treatment(workflow: Workflow, treatment: Treatment[SubjectT, Any, Any, Any],
                  subject: SubjectT, *, label: str | None = None) -> SubjectSteps:
    """Add one subject's chain to ``workflow`` (independent of every other step)."""
    label = treatment.label(subject) if label is None else label
    n_parts = treatment.count_parts(subject)
    if isinstance(n_parts, bool) or not isinstance(n_parts, int) or n_parts < 1:
        raise ValueError(f"{type(treatment).__name__}.count_parts({label!r}) must be a whole "
                         f"number >= 1, got {n_parts!r}")
    split = workflow.add_step(split_checked, treatment, subject, n_parts, prerequisites=[],
                              step_name=f"{label}/split")
    parts = tuple(workflow.add_step(treatment.process, Result(split)[i], prerequisites=[split],
                                    step_name=f"{label}/process[{i}]") for i in range(n_parts))
    merge = workflow.add_step(treatment.merge, subject, [Result(p) for p in parts],
                              prerequisites=parts, step_name=f"{label}/merge")
    fetch = workflow.add_step(treatment.fetch, subject, Result(merge), on_client=True,
                              step_name=f"{label}/fetch")
    clean = workflow.add_step(treatment.clean, subject, prerequisites=[fetch], always=True,
                              step_name=f"{label}/clean")
    return SubjectSteps(label, split, parts, merge, fetch, clean)


@dataclass
class SubjectOutcome:
    """How one subject went: ``value`` is what ``fetch`` returned, when it ran."""

    label: str
    subject: Any
    ok: bool
    value: Any = None
    #: Why the subject failed: the first failed step and its error ("" when ok).
    error: str = ""
    steps: list[StepReport] = field(default_factory=list, repr=False)


@dataclass
class DispatchReport:
    """Every subject's outcome, and the report of the workflow that ran them."""

    subjects: dict[str, SubjectOutcome]
    workflow: WorkflowReport

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.subjects.values())

    @property
    def failed(self) -> list[SubjectOutcome]:
        return [outcome for outcome in self.subjects.values() if not outcome.ok]

    def __str__(self) -> str:
        width = max((len(label) for label in self.subjects), default=0)
        lines = []
        for label, outcome in self.subjects.items():
            state = f"ok: {outcome.value}" if outcome.ok else f"FAILED: {outcome.error}"
            lines.append(f"{label:<{width}}  {state}")
        n_failed = len(self.failed)
        lines.append(f"{len(self.subjects) - n_failed} of {len(self.subjects)} subjects ok"
                     + (f", {n_failed} failed" if n_failed else ""))
        return "\n".join(lines)


def _subject_outcome(chain: SubjectSteps, subject: Any, report: WorkflowReport) -> SubjectOutcome:
    steps = [report[step_id] for step_id in chain.all]
    ok = all(step.state == DONE for step in steps)
    fetch = report[chain.fetch]
    value = fetch.value if fetch.state == DONE else None
    error = ""
    if not ok:
        bad = next((s for s in steps if s.state == FAILED), None) \
            or next(s for s in steps if s.state != DONE)
        error = f"{bad.name.rpartition('/')[2]}: {bad.reason}"
    return SubjectOutcome(chain.label, subject, ok, value, error, steps)


def dispatch(treatment: Treatment[SubjectT, Any, Any, Any],
             subjects: Mapping[str, SubjectT] | Iterable[SubjectT], mode: str | None = None, *,
             max_parallel: int | None = None, run_dir: str | os.PathLike[str] | None = None,
             name: str | None = None, **options: Any) -> DispatchReport:
    """Run ``treatment`` on every subject in one workflow; one subject's failure stops only it.

    ``subjects`` is a mapping ``label -> subject`` or an iterable of subjects (labelled by
    ``treatment.label``). The other arguments are :meth:`Workflow.run`'s; with ``run_dir``,
    dispatching again runs only the subjects' steps that did not finish.

    A subject that is a file (or holds some) reaches hosts that do not share the caller's
    disk when wrapped in :class:`remotemap.Staged`: each step then receives the copy on the
    host it runs on, ``fetch`` (here) the caller's path, and the copies are removed at the end
    (see ``docs/staging.md``; ``send=[...]`` sends files every step needs).
    """
    pairs = list(subjects.items()) if isinstance(subjects, Mapping) \
        else [(treatment.label(s), s) for s in subjects]
    labels = [label for label, _ in pairs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"two subjects are labelled {duplicates[0]!r}: labels must be unique "
                         "(pass a mapping label -> subject)")
    workflow = Workflow(name or type(treatment).__name__)
    chains: dict[str, SubjectSteps] = {}
    unplanned: dict[str, SubjectOutcome] = {}
    for label, subject in pairs:
        try:
            chains[label] = add_treatment(workflow, treatment, subject, label=label)
        except Exception as exc:  # count_parts failed: this subject only
            unplanned[label] = SubjectOutcome(
                label, subject, False, error=f"count_parts: {type(exc).__name__}: {exc}")
    report = workflow.run(mode, max_parallel=max_parallel, run_dir=run_dir, **options)
    outcomes = {label: unplanned[label] if label in unplanned
                else _subject_outcome(chains[label], subject, report)
                for label, subject in pairs}
    return DispatchReport(outcomes, report)
