"""Workflow runs (``remotemap.workflow.store``) in the read model: one task per step, indexed
by step id; the values of a run given a ``run_dir`` (a run without one keeps its report
only)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from remotemap.errors import RemotemapError, TaskFailure
from remotemap.execution import this_host
from remotemap.locks import DirectoryLock, RunDirectoryBusy
from remotemap.run_index.model import RUNNING, STOPPED, LoadedRun, RunSummary, epoch
from remotemap.run_index.stored import lock_held
from remotemap.runs import key_path
from remotemap.state import pid_alive, state_dir
from remotemap.workflow.store import REPORT, WorkflowStore, list_workflow_runs

_DONE, _FAILED = "done", "failed"


def runs() -> list[tuple[Path, dict[str, Any]]]:
    """Every indexed workflow run that can be read: (its directory, its report)."""
    return list_workflow_runs()


def find(run: str) -> tuple[Path, dict[str, Any]] | None:
    """The workflow run with id ``run``, or whose directory is ``run``; None when none is."""
    given = Path(run).expanduser()
    for root, report in runs():
        if str(report.get("id")) == run or (given.is_dir() and given.resolve() == root):
            return root, report
    return None


def _running(root: Path, report: dict[str, Any]) -> bool:
    """Whether the process that runs it is still at it (a report-only run takes no lock)."""
    if lock_held(root):
        return True
    return report.get("host") != this_host() or pid_alive(report.get("pid"))


def _failure(step: dict[str, Any]) -> TaskFailure:
    """A failed step as a TaskFailure: its report keeps the reason text only."""
    kind, _, message = str(step.get("reason") or "").partition(": ")
    if not message:
        kind, message = "StepFailed", kind
    return TaskFailure(index=int(step.get("id", 0)), exception_type=kind, message=message,
                       kind="exception")


def _step_line(step: dict[str, Any]) -> str:
    state = str(step.get("state", "?")) + (" (reused)" if step.get("reused") else "")
    line = f"step {step.get('id', '?'):>3}  {step.get('name', '')}  {state}"
    reason = step.get("reason")
    return f"{line}: {reason}" if reason and step.get("state") != _DONE else line


def load(root: Path, report: dict[str, Any]) -> LoadedRun:
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict)]
    done = [s for s in steps if s.get("state") == _DONE]
    failed = [s for s in steps if s.get("state") == _FAILED]
    pending = sorted(int(s.get("id", 0)) for s in steps if s not in done and s not in failed)
    state = str(report.get("state", "?"))
    if state == RUNNING and not _running(root, report):
        state = STOPPED
    kept = "key" in report
    summary = RunSummary(
        id=str(report.get("id", root.name)), kind="workflow", mode=str(report.get("mode", "?")),
        state=state, ok=len(done), failed=len(failed), pending=len(pending),
        created=epoch(report.get("created")), location=str(root),
        name=str(report.get("name", "")))
    details = [*([] if kept else ["report only: run without run_dir=, it kept no values"]),
               f"created {report.get('created', '?')}, last updated "
               f"{report.get('updated', '?')}, run {report.get('runs', 1)} time(s)",
               *(_step_line(s) for s in steps)]
    if kept and (failed or pending):
        details.append("run the workflow again with the same run_dir to run only the steps "
                       "that did not finish")
    keys = {int(s.get("id", 0)): str(s.get("key")) for s in done}

    def values() -> dict[int, Any]:
        if not kept:
            raise RemotemapError(f"workflow run {summary.id} kept no step values: it was run "
                                 "without run_dir= (its report is all there is)")
        return WorkflowStore.reader(root).load_values(keys)

    return LoadedRun(summary, [_failure(s) for s in failed], pending, details,
                     load_values=values, handle=(root, report),
                     indices=sorted(int(s.get("id", 0)) for s in steps))


def remove(run: LoadedRun) -> str:
    """Delete the run: its directory (a run_dir's too), its key and its index entry; what was
    done. RunDirectoryBusy when its process still runs it."""
    root, report = run.handle
    if _running(root, report) and report.get("state") == RUNNING:
        raise RunDirectoryBusy(f"workflow run {run.id} is running (process "
                               f"{report.get('pid')} on {report.get('host')})")
    if not (root / REPORT).is_file():
        raise RemotemapError(f"{root} holds no {REPORT}: not removed")
    lock = DirectoryLock(root, "the workflow run directory")
    lock.acquire(label="remotemap runs clean")
    try:
        shutil.rmtree(root, ignore_errors=True)
    finally:
        lock.release()
    if "key" in report:
        key_path(str(report["key"])).unlink(missing_ok=True)
    link = state_dir("workflows") / run.id
    if link.is_symlink():
        link.unlink()
    return f"removed {root}"
