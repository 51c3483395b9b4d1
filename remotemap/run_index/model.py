"""The read model of every kind of run: one :class:`RunSummary` per run, one :class:`LoadedRun`
when a run is opened (``remotemap runs show``, :func:`remotemap.load_run`)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from remotemap.errors import RemoteException, RemotemapError, TaskFailure

#: The three kinds of run remotemap keeps: ``remote_map(..., run_dir=...)`` runs, workflow
#: runs and cluster runs (detached, or followed by the process that submitted them).
RunKind = Literal["run_dir", "workflow", "cluster"]
KINDS: tuple[RunKind, ...] = ("run_dir", "workflow", "cluster")

#: States a run can be in. ``stopped``: its process ended before every task did (killed, or
#: for a cluster run, rounds over with tasks still to run: ``remotemap collect`` goes on).
RUNNING, DONE, FAILED, STOPPED, CANCELLED, UNKNOWN = (
    "running", "done", "failed", "stopped", "cancelled", "unknown")


@dataclass(frozen=True)
class RunSummary:
    """One run, whatever its kind: what ``remotemap runs`` prints on one line."""

    id: str
    kind: RunKind
    mode: str
    #: ``running``, ``done``, ``failed``, ``stopped``, ``cancelled``, ``interrupted`` (a
    #: workflow stopped by Ctrl-C) or ``unknown`` (the run cannot be read; see ``error``).
    state: str
    ok: int
    failed: int
    pending: int
    #: When the run was made, in seconds since the epoch (None when it does not say).
    created: float | None
    #: Where it lives: its directory (``host:path`` for a cluster run on another host).
    location: str
    #: The function's name (a workflow's own name).
    name: str = ""
    #: Why the run could not be read, when ``state`` is ``unknown``.
    error: str = ""

    @property
    def n_tasks(self) -> int:
        return self.ok + self.failed + self.pending

    @property
    def finished_well(self) -> bool:
        """Every task done and nothing failed: a run ``runs clean`` removes without --force."""
        return self.state == DONE and not self.failed and not self.pending

    def age(self, now: float | None = None) -> str:
        """How long ago the run was made, in the largest whole unit: ``42s``, ``5m``, ``3h``,
        ``2d``; ``?`` when unknown."""
        if self.created is None:
            return "?"
        seconds = max(0, int((time.time() if now is None else now) - self.created))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


def epoch(value: object) -> float | None:
    """A creation time as a run stores it (ISO text or seconds) in seconds since the epoch."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def spans(indices: Sequence[int], limit: int = 20) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7`` (at most ``limit`` parts, then ``...``)."""
    parts: list[str] = []
    ordered = sorted(indices)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[start], ordered[end]
        parts.append(str(first) if first == last else f"{first}-{last}")
        start = end + 1
    more = ", ..." if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


class RunNotFinished(RemotemapError):
    """:meth:`LoadedRun.results` of a run with tasks still pending (not run yet, running, or
    never run because the run stopped). ``results`` holds every value computed so far (None
    elsewhere), ``pending`` the indices without an outcome, ``failures`` the failed tasks."""

    def __init__(self, run_id: str, results: list[Any], pending: Sequence[int],
                 failures: Sequence[TaskFailure]) -> None:
        self.run_id = run_id
        self.results = results
        self.pending = sorted(pending)
        self.failures = sorted(failures, key=lambda f: f.index)
        failed = (f"; {len(self.failures)} failed (tasks "
                  f"{spans([f.index for f in self.failures])})" if self.failures else "")
        super().__init__(
            f"run {run_id} is not finished: {len(self.pending)} of {len(results)} tasks have "
            f"no result yet (tasks {spans(self.pending)}){failed}. Its .results holds the "
            "values so far; `remotemap runs show` tells where the run is")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.results, self.pending, self.failures))


@dataclass
class LoadedRun:
    """One run opened for reading, whatever its kind (see :func:`remotemap.load_run`).

    ``summary`` is its line of ``remotemap runs``; ``failures`` holds one
    :class:`~remotemap.TaskFailure` per failed task (for a workflow: per failed step, indexed
    by step id); ``pending`` the tasks without an outcome yet. :meth:`results` gives the
    values in task order.
    """

    summary: RunSummary
    failures: list[TaskFailure]
    pending: list[int]
    #: What ``remotemap runs show`` prints about this kind of run (steps, jobs, rounds).
    details: list[str] = field(default_factory=list)
    #: Loads the values of the tasks that succeeded, by index (a workflow's steps' values:
    #: read only when asked, as they may be large).
    load_values: Callable[[], dict[int, Any]] = field(default=dict, repr=False)
    #: The kind's own handle on the run (its store, its registry entry), for removal.
    handle: Any = field(default=None, repr=False)
    #: The tasks' indices in order: ``0..n-1``, or a workflow's step ids (from 1).
    indices: list[int] | None = None

    @property
    def id(self) -> str:
        return self.summary.id

    @property
    def kind(self) -> RunKind:
        return self.summary.kind

    def results(self) -> list[Any]:
        """Every task's value, in task order, as ``remote_map`` would have returned them.

        Like ``remote_map`` (and joblib, submitit), a run that ended with failed tasks raises
        :class:`~remotemap.RemoteException` (``.failures``, and ``.results`` with every value
        that was computed, None elsewhere; a task that never ran because of them is None
        too); a run still going on or stopped half-way, with tasks that have no result yet,
        raises :class:`RunNotFinished`, naming them. A workflow's values come in step id order
        (``results()[0]`` is step 1's; its failures are indexed by step id); a workflow run
        kept them only if it was given a ``run_dir``: otherwise this raises
        :class:`~remotemap.RemotemapError` saying so.
        """
        values = self.load_values()
        indices = self.indices if self.indices is not None else range(self.summary.n_tasks)
        results = [values.get(index) for index in indices]
        going_on = self.summary.state in (RUNNING, STOPPED, UNKNOWN)
        if self.pending and (going_on or not self.failures):
            raise RunNotFinished(self.id, results, self.pending, self.failures)
        if self.failures:
            raise RemoteException(self.failures, results)
        return results
