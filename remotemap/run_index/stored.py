"""``remote_map(..., run_dir=...)`` runs (``remotemap.runs``) in the read model."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from remotemap.errors import TamperedFile, UnsafePath
from remotemap.locks import LOCK, DirectoryLock
from remotemap.run_index.model import RUNNING, STOPPED, UNKNOWN, LoadedRun, RunSummary, epoch
from remotemap.runs import RunStore, list_runs


def lock_held(root: Path) -> bool:
    """Whether a process holds the run's lock now (it is running). Probed with a shared lock
    on a descriptor opened read-only: nothing is written, unlike taking the lock."""
    try:
        fd = os.open(root / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # never locked: no lock file
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def stores() -> list[RunStore]:
    """Every readable stored run; UnsafePath when their index is not safe to read."""
    return list_runs()


def find(run: str) -> RunStore | None:
    """The stored run named ``run`` (its id or its directory), or None when there is none.
    UnsafePath, ValueError (a run this version cannot read) pass through: they name it."""
    try:
        root = RunStore.find(run)
    except ValueError as exc:
        if str(exc).startswith("no stored run"):
            return None
        raise
    return RunStore.existing(root)


def load(store: RunStore) -> LoadedRun:
    """The run with its counts, failures and values (each outcome's seal checked first)."""
    meta = store.meta()
    n_tasks = int(meta.get("n_tasks") or 0)
    state, error = str(meta.get("state", "?")), ""
    try:
        stored = store.load()
        values, failures = stored.values, stored.failures
    except (OSError, TamperedFile, UnsafePath) as exc:
        values, failures, state, error = {}, {}, UNKNOWN, str(exc)
    if state == RUNNING and not lock_held(store.root):
        state = STOPPED  # its process was killed half-way: `remotemap runs retry` goes on
    pending = sorted(set(range(n_tasks)) - set(values) - set(failures))
    summary = RunSummary(
        id=str(meta.get("id", store.root.name)), kind="run_dir", mode=str(meta.get("mode", "?")),
        state=state, ok=len(values), failed=len(failures), pending=len(pending),
        created=epoch(meta.get("created")), location=str(store.root),
        name=str(meta.get("function", "")), error=error)
    details = [f"created {meta.get('created', '?')}, last updated {meta.get('updated', '?')}"]
    if failures or pending:
        details.append(f"`remotemap runs retry {summary.id}` reruns the failed and unfinished "
                       "tasks")
    return LoadedRun(summary, [failures[i] for i in sorted(failures)], pending, details,
                     load_values=lambda: dict(values), handle=store)


def remove(run: LoadedRun) -> str:
    """Delete the run (directory, key, index entry); what was done. RunDirectoryBusy if it
    is running."""
    store: RunStore = run.handle
    lock = DirectoryLock(store.root, "the run directory")
    lock.acquire(label="remotemap runs clean")
    try:
        store.remove()
    finally:
        lock.release()
    return f"removed {store.root}"
