"""Every run remotemap keeps, whatever its kind, read one way: ``remotemap runs`` and
:func:`load_run`.

Three kinds of run are kept, each indexed under the state home (``remotemap.state``):

* ``run_dir``: ``remote_map(..., run_dir=...)`` (``remotemap.runs``), any mode;
* ``workflow``: every ``Workflow.run`` (``remotemap.workflow.store``);
* ``cluster``: mode ``cluster`` runs, detached (``submit``) or followed by their process
  (``remotemap.backends.cluster.registry``).

Each kind has a loader module here (``stored``, ``workflows``, ``cluster``) that turns one run
into a :class:`LoadedRun` (a :class:`RunSummary` plus failures, pending tasks and values) and
can remove it. Reading a run never changes it: nothing is started, locked or rewritten.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from remotemap.errors import RemotemapError
from remotemap.run_index import cluster, stored, workflows
from remotemap.run_index.model import (
    KINDS,
    LoadedRun,
    RunKind,
    RunNotFinished,
    RunSummary,
)

__all__ = ["KINDS", "LoadedRun", "RunKind", "RunNotFinished", "RunNotFound", "RunSummary",
           "load_all", "load_run", "remove_run"]


class RunNotFound(RemotemapError, ValueError):
    """No kept run has that id (or directory), or it names several."""


def load_all() -> list[LoadedRun]:
    """Every run of every kind, oldest first. UnsafePath when the index of ``run_dir`` runs
    is not safe to read (another user could have planted runs in it)."""
    runs = [stored.load(store) for store in stored.stores()]
    runs += [workflows.load(root, report) for root, report in workflows.runs()]
    runs += [cluster.load(entry) for entry in cluster.entries()]
    return sorted(runs, key=lambda run: (run.summary.created or 0.0, run.id))


def _exact(run: str) -> list[Callable[[], LoadedRun]]:
    """Loaders of the runs whose id (or directory) is exactly ``run``, in every kind."""
    found: list[Callable[[], LoadedRun]] = []
    store = stored.find(run)
    if store is not None:
        found.append(lambda: stored.load(store))
    workflow = workflows.find(run)
    if workflow is not None:
        found.append(lambda: workflows.load(*workflow))
    entry = cluster.find(run)
    if entry is not None:
        found.append(lambda: cluster.load(entry))
    return found


def load_run(run: str | os.PathLike[str]) -> LoadedRun:
    """The run with id ``run`` (as ``remotemap runs`` lists it, or a unique prefix of it), or
    kept in directory ``run``, whatever its kind: a ``remote_map(..., run_dir=...)`` run, a
    workflow run or a cluster run.

    The :class:`LoadedRun` has ``summary`` (id, kind, mode, state, ok/failed/pending,
    age, where), ``failures`` (one :class:`~remotemap.TaskFailure` per failed task),
    ``pending`` and :meth:`~LoadedRun.results`, which returns the values in task order or
    raises as ``remote_map`` would (:class:`~remotemap.RemoteException` when tasks failed,
    :class:`RunNotFinished` when some have no result yet). Reading waits for nothing and
    changes nothing: a cluster run still running shows what came back so far.

    Raises :class:`RunNotFound` (a ``ValueError``) when no run has that id.
    """
    name = os.fspath(run)
    found = _exact(name)
    if not found:
        ids = _all_ids()
        prefixed = sorted({(kind, i) for kind, i in ids if i.startswith(name)})
        if len(prefixed) == 1:
            found = _exact(prefixed[0][1])
        elif prefixed:
            raise RunNotFound(f"{name!r} matches several runs: "
                              + ", ".join(f"{i} ({kind})" for kind, i in prefixed))
    if len(found) > 1:
        raise RunNotFound(f"{name!r} names runs of several kinds; give its directory instead")
    if not found:
        raise RunNotFound(f"no run {name!r}: no run_dir, workflow or cluster run has that id "
                          "or directory; `remotemap runs` lists them")
    return found[0]()


def _all_ids() -> list[tuple[str, str]]:
    """(kind, id) of every run, read cheaply (no outcome is loaded)."""
    ids: list[tuple[str, str]] = []
    with contextlib.suppress(OSError, RemotemapError):  # an unsafe index: not offered
        ids += [("run_dir", str(s.meta().get("id"))) for s in stored.stores()]
    ids += [("workflow", str(report.get("id"))) for _, report in workflows.runs()]
    ids += [("cluster", str(entry.get("run_id"))) for entry in cluster.entries()]
    return ids


_REMOVERS: dict[RunKind, Callable[[LoadedRun], str]] = {
    "run_dir": stored.remove, "workflow": workflows.remove, "cluster": cluster.remove}


def remove_run(run: LoadedRun) -> str:
    """Delete a run of any kind (its directory, key and index entry); what was done.
    :class:`~remotemap.locks.RunDirectoryBusy` when it is running now."""
    return _REMOVERS[run.kind](run)
