"""Detached cluster runs: submit now, collect later (from any process), cancel, list.

``submit`` stages the run and starts its engine on the submitting host, then returns the run
id: the engine (not this process) drives the jobs. ``collect`` reopens the run directory,
streams the outcomes back and, if needed, finishes what the engine left (a dead engine is
replaced; tasks a crashed job never reached go to one more round). The run is found through
the registry (``registry``: ``$XDG_STATE_HOME/remotemap/cluster``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remotemap.backends.cluster.files import ClusterError, open_files
from remotemap.backends.cluster.registry import lookup, registered, unregister
from remotemap.backends.cluster.runs import ClusterRun
from remotemap.backends.cluster.session import create_run, function_name, local_problem
from remotemap.backends.cluster.settings import cluster_settings, poll_interval
from remotemap.errors import BackendUnavailable, RemoteException, TaskFailure
from remotemap.execution import dumps, loads, pickle_function
from remotemap.state import pid_alive
from remotemap.tasks import normalize_arguments

_SUBMIT_FAILURES = "submit-failures.pkl"


def submit(func: Callable[..., Any], largs: Sequence[Sequence[Any]] | None = None,
           lkwargs: Sequence[Mapping[str, Any]] | None = None, *,
           config: Any = None, env: Mapping[str, str] | None = None,
           timeout: float | None = None, **options: Any) -> str:
    """Submit ``func(*largs[i], **lkwargs[i])`` for every i as a detached cluster run; return
    its id at once. ``options`` override the ``[cluster]`` config section (``scheduler=``,
    ``host=``, ``queue=``...); ``env`` and ``timeout`` mean what they mean for remote_map."""
    # Imported here, not above: the configuration and the driver are for submitting; the
    # status, collect and cancel commands read runs without them.
    from remotemap.config import Config, load_config
    from remotemap.driver import make_policy

    policy = make_policy("continue", timeout, 0, 0.0, env)
    all_args, all_kwargs = normalize_arguments(largs, lkwargs)
    cfg = config if isinstance(config, Config) else load_config(config)
    settings = cluster_settings(cfg.settings_for("cluster", options))
    problem = local_problem(settings, task_timeout=timeout)
    if problem:
        raise BackendUnavailable(f"mode 'cluster' cannot run here: {problem}")
    run = create_run(settings, pickle_function(func), function=function_name(func),
                     env=policy.options.env, n_tasks=len(all_args), detached=True)
    try:
        tasks = list(zip(range(len(all_args)), all_args, all_kwargs, strict=True))
        failures = run.add_tasks(tasks, task_timeout=timeout)
        if failures:
            run.write_sealed(_SUBMIT_FAILURES, dumps(failures))
    finally:
        run.files.close()
    return run.run_id


def _open(run_id: str) -> tuple[dict[str, Any], ClusterRun]:
    entry = lookup(run_id)
    files = open_files(entry["settings"], entry["root"])
    try:
        return entry, ClusterRun.open(files)
    except BaseException:
        files.close()
        raise


def open_run(run_id: str) -> ClusterRun:
    """A registered run (by id or unique prefix), opened: close its ``files`` when done."""
    return _open(run_id)[1]


def collect(run_id: str, *, timeout: float | None = None, remove: bool = False) -> list[Any]:
    """Every result of a cluster run, in order, once every task is done (waits for them).

    Raises :class:`~remotemap.RemoteException` (with every result and failure) when tasks
    failed, TimeoutError after ``timeout`` seconds. ``remove``: delete the run afterwards.
    """
    entry, run = _open(run_id)
    try:
        pid = entry.get("pid")
        if not entry.get("detached") and pid is not None and pid != os.getpid() and pid_alive(pid):
            raise ClusterError(f"cluster run {run.run_id} is still followed by the process "
                               f"that submitted it (pid {pid}): collect it once that ended")
        n_tasks = entry.get("n_tasks") or run.meta.get("n_tasks")
        if n_tasks is None:  # a run of a session whose process died: the tasks it staged
            n_tasks = max(run.file_index.values(), default=-1) + 1
        results: list[Any] = [None] * int(n_tasks)
        blob = run.read_sealed(_SUBMIT_FAILURES)
        failures: list[TaskFailure] = list(loads(blob)) if blob else []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            values, failed = run.poll()
            for index, value in values:
                results[index] = value
            failures += failed
            if not run.pending:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"cluster run {run.run_id}: {len(run.pending)} of "
                                   f"{n_tasks} tasks not done after {timeout} s")
            time.sleep(poll_interval(run.settings))
        if remove:
            run.wait_ended(30.0)
            run.remove()
            unregister(run.run_id)
    finally:
        run.files.close()
    if failures:
        raise RemoteException(failures, results)
    return results


@dataclass
class Peek:
    """A cluster run as it is now (see :func:`peek`)."""

    entry: dict[str, Any]
    n_tasks: int
    values: dict[int, Any]
    failures: list[TaskFailure]
    #: Tasks without an outcome yet (running, queued, or for a new round ``collect`` starts).
    pending: list[int]
    #: Each round's status file as the engine last wrote it (``state``, ``ended``, ``jobs``,
    #: ``heartbeat``), by round number.
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)
    job_counts: dict[str, int] = field(default_factory=dict)


def peek(run_id: str) -> Peek:
    """A run as it is now, waiting for nothing and starting nothing (no round, no engine):
    the values and failures so far, and the tasks still pending."""
    entry, run = _open(run_id)
    try:
        blob = run.read_sealed(_SUBMIT_FAILURES)
        failures: list[TaskFailure] = list(loads(blob)) if blob else []
        values, failed = run.snapshot()
        n_tasks = entry.get("n_tasks") or run.meta.get("n_tasks")
        if n_tasks is None:  # a run of a session whose process died: the tasks it staged
            n_tasks = max(run.file_index.values(), default=-1) + 1
        rounds = {number: dict(rnd.status or {}) for number, rnd in run.rounds.items()}
        return Peek(entry, int(n_tasks), dict(values), failures + failed, sorted(run.pending),
                    rounds, run.job_counts())
    finally:
        run.files.close()


def cancel(run_id: str, *, timeout: float = 90.0) -> dict[str, int]:
    """Cancel a run's jobs (running ones are killed, queued ones dropped); wait until its
    engines stopped. Returns how many jobs ended in each state. The run stays registered
    (collect gives what was computed) until collected with ``remove=True``."""
    _, run = _open(run_id)
    try:
        run.cancel()
        if not run.wait_ended(timeout):
            raise ClusterError(f"cluster run {run.run_id}: its jobs did not stop within "
                               f"{timeout:g} s")
        return run.job_counts()
    finally:
        run.files.close()


def list_runs() -> list[dict[str, Any]]:
    """Every registered run: id, where, function, task and outcome counts, jobs per state."""
    summaries = []
    for entry in registered():
        settings = entry.get("settings") or {}
        summary = {"run_id": entry.get("run_id"), "host": settings.get("host") or "localhost",
                   "scheduler": settings.get("scheduler"), "function": entry.get("function"),
                   "n_tasks": entry.get("n_tasks"), "created": entry.get("created"),
                   "detached": entry.get("detached"), "root": entry.get("root")}
        attached_pid = None if entry.get("detached") else entry.get("pid")
        if attached_pid is not None:
            summary["submitter_alive"] = pid_alive(attached_pid)
        try:
            files = open_files(settings, str(entry["root"]))
        except Exception as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
            summaries.append(summary)
            continue
        try:
            run = ClusterRun.open(files)
            summary["outcomes"] = run.outcome_count()
            summary["jobs"] = run.job_counts()
        except Exception as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            files.close()
        summaries.append(summary)
    return summaries

