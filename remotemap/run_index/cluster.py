"""Cluster runs (``remotemap.backends.cluster``: the registry, detached or followed by the
process that submitted them) in the read model. Reading one waits for nothing and starts
nothing: ``remotemap collect`` is what waits, and finishes what the engine left."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from remotemap.backends.cluster.registry import registered, unregister
from remotemap.locks import RunDirectoryBusy
from remotemap.run_index.model import (
    CANCELLED,
    DONE,
    FAILED,
    RUNNING,
    STOPPED,
    UNKNOWN,
    LoadedRun,
    RunSummary,
    epoch,
)
from remotemap.state import pid_alive

if TYPE_CHECKING:
    from remotemap.backends.cluster.detached import Peek

#: A round whose engine has not written its status for this long is not being followed
#: (``remotemap collect`` starts another engine): the run shows as stopped, not running.
_SILENT_AFTER = 20.0


def entries() -> list[dict[str, Any]]:
    return registered()


def find(run: str) -> dict[str, Any] | None:
    """The registered run with id ``run`` (exactly: a prefix could name another kind's run)."""
    return next((e for e in registered() if e.get("run_id") == run), None)


def _where(entry: dict[str, Any]) -> str:
    host = (entry.get("settings") or {}).get("host")
    return f"{host}:{entry.get('root')}" if host else str(entry.get("root"))


def _followed(entry: dict[str, Any]) -> bool:
    """Whether the process that submitted it still follows it (not a detached run)."""
    return not entry.get("detached") and pid_alive(entry.get("pid"))


def _state(entry: dict[str, Any], peek: Peek) -> str:
    rounds = peek.rounds.values()
    engines_on = any(not r.get("ended") and time.time() - float(r.get("heartbeat") or 0)
                     < _SILENT_AFTER for r in rounds)
    if _followed(entry) or (peek.pending and engines_on):
        return RUNNING
    if peek.pending:
        return STOPPED
    if any(r.get("state") == "cancelled" for r in rounds):
        return CANCELLED
    return FAILED if peek.failures else DONE


def load(entry: dict[str, Any]) -> LoadedRun:
    from remotemap.backends.cluster.detached import peek as peek_run

    settings = entry.get("settings") or {}
    n = int(entry.get("n_tasks") or 0)
    base = RunSummary(id=str(entry.get("run_id")), kind="cluster", mode="cluster",
                      state=UNKNOWN, ok=0, failed=0, pending=n,
                      created=epoch(entry.get("created")), location=_where(entry),
                      name=str(entry.get("function") or ""))
    how = ("detached" if entry.get("detached") else
           f"followed by process {entry.get('pid')}" if _followed(entry) else
           f"its process ({entry.get('pid')}) ended")
    details = [f"run directory {_where(entry)}",
               f"scheduler {settings.get('scheduler')} via "
               f"{settings.get('host') or 'localhost'}; {how}"]
    try:
        peek = peek_run(str(entry.get("run_id")))
    except Exception as exc:  # a host out of reach, a directory removed: say so, list it
        summary = replace(base, error=f"{type(exc).__name__}: {exc}")
        return LoadedRun(summary, [], list(range(n)), [*details, f"cannot read it: {exc}"],
                         handle=entry)
    summary = replace(base, state=_state(entry, peek), ok=len(peek.values),
                      failed=len(peek.failures), pending=len(peek.pending))
    jobs = ", ".join(f"{state} {n}" for state, n in sorted(peek.job_counts.items()))
    details.append(f"{len(peek.rounds)} round(s) of jobs; jobs: {jobs or 'none'}")
    if summary.state == STOPPED:
        details.append(f"`remotemap collect {summary.id}` finishes it (starts what is left)")
    values = peek.values
    return LoadedRun(summary, sorted(peek.failures, key=lambda f: f.index), peek.pending,
                     details, load_values=lambda: dict(values), handle=entry)


def remove(run: LoadedRun) -> str:
    """Delete the run directory, its key and its registry entry; what was done. A run with
    jobs still out is refused (cancel it first); one whose directory cannot be opened any
    more (removed by hand, its host gone) is only forgotten, and the message says so."""
    from remotemap.backends.cluster.detached import open_run

    if run.summary.state == RUNNING:
        raise RunDirectoryBusy(f"cluster run {run.id} is running: `remotemap cancel {run.id}` "
                               "first")
    try:
        cluster_run = open_run(run.id)
    except Exception as exc:
        unregister(run.id)
        return f"forgot it; its directory {run.summary.location} could not be opened: {exc}"
    try:
        _wait_engines_exited(cluster_run)
        cluster_run.remove()
    finally:
        cluster_run.files.close()
    unregister(run.id)
    return f"removed {run.summary.location}"


def _wait_engines_exited(cluster_run: Any, timeout: float = 30.0) -> None:
    """Wait for the run's engines still finishing: an engine writes its round's last status
    after the tasks' outcomes, and would make its directory again under a removed run. (Only
    an engine of this machine can be seen; one on a submitting host is not waited for.)"""
    deadline = time.monotonic() + timeout
    while any(cluster_run.files.engine_running(n) for n in list(cluster_run.rounds)):
        if time.monotonic() > deadline:
            raise RunDirectoryBusy(f"cluster run {cluster_run.run_id}: its engine still runs "
                                   f"after {timeout:g} s: `remotemap cancel "
                                   f"{cluster_run.run_id}` first")
        time.sleep(0.05)
