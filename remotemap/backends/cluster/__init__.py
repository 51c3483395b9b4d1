"""``cluster``: tasks run as batch jobs through soma-workflow (its local scheduler, SLURM, PBS
Pro or DRMAA), submitted from this machine or from a host reached over SSH.

The tasks of a call go out as one soma-workflow ``Workflow`` (a *round*): grouped into jobs of
``tasks_per_job``, each job runs ``python -m remotemap.worker run RUN_DIR FILE...``. Results
stream back as each task's outcome file appears; failures are judged from soma-workflow's
account of each job. The engine that drives soma-workflow runs in its own detached process on
the submitting host, so a run outlives the process that submitted it: ``remotemap collect
RUN`` gets its results later. See docs/cluster.md.

The modules, each importing only those above it in this list:

* ``layout``: every on-disk name a cluster run adds to protocol's run directory;
* ``checks``: what the submitting host needs (soma-workflow, the scheduler's commands);
* ``pending``: SLURM's pending reasons of queued jobs (the engine asks ``squeue``);
* ``engine``: the engine program (``python -m remotemap.backends.cluster_engine``, a shim);
* ``verdict``: ``sacct`` rows to soma-workflow's statuses, and a job's end to a failure;
* ``swf``: soma-workflow driven in light mode (imported by the engine only);
* ``pilots``: the engine's side of worker jobs (requeue a dead worker's claims, add workers);
* ``settings``: the ``[cluster]`` settings, a round's spec, the poll interval;
* ``files``: the run directory here or over SSH (``RunFiles``), ``ClusterError``;
* ``limits``: a SLURM partition's limits, checked before a run makes anything;
* ``registry``: where each run is, for later processes;
* ``rounds``: a round's status and its engine, as the caller follows them;
* ``runs``: ``ClusterRun``, one run seen from the caller (tasks, rounds, verdicts);
* ``session``: ``ClusterBackend``, ``ClusterSession``, ``create_run``, ``close_run``;
* ``detached``: :func:`submit`, :func:`collect`, :func:`cancel`, :func:`list_runs`,
  :func:`pending_reasons`.

This ``__init__`` imports none of them: the engine loads the package on a submitting host
with no more than the standard library. The names below are imported on first use (PEP 562),
so ``remotemap.backends.cluster:ClusterBackend`` (the mode's registry entry) and ``from
remotemap.backends.cluster import submit, collect, cancel, list_runs`` keep working.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remotemap.backends.cluster.detached import cancel as cancel
    from remotemap.backends.cluster.detached import collect as collect
    from remotemap.backends.cluster.detached import list_runs as list_runs
    from remotemap.backends.cluster.detached import pending_reasons as pending_reasons
    from remotemap.backends.cluster.detached import submit as submit
    from remotemap.backends.cluster.files import ClusterError as ClusterError
    from remotemap.backends.cluster.limits import PartitionRefused as PartitionRefused
    from remotemap.backends.cluster.session import ClusterBackend as ClusterBackend
    from remotemap.backends.cluster.session import ClusterSession as ClusterSession
    from remotemap.backends.cluster.settings import cluster_settings as cluster_settings

#: Public name -> the module of this package that defines it.
_LAZY = {
    "ClusterBackend": "session",
    "ClusterSession": "session",
    "ClusterError": "files",
    "cluster_settings": "settings",
    "submit": "detached",
    "collect": "detached",
    "cancel": "detached",
    "list_runs": "detached",
    "pending_reasons": "detached",
    "PartitionRefused": "limits",
}

__all__ = ["ClusterBackend", "ClusterError", "ClusterSession", "PartitionRefused", "cancel",
           "cluster_settings", "collect", "list_runs", "pending_reasons", "submit"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
