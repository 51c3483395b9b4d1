"""``cluster``: tasks run as batch jobs through soma-workflow (its local scheduler, SLURM, PBS
Pro or DRMAA), submitted from this machine or from a host reached over SSH.

A session collects the chunks it is given and, when ``wait`` is first called, submits them as
one soma-workflow ``Workflow`` (a *round*): the tasks are grouped into jobs of
``tasks_per_job``, each job runs ``python -m remotemap.worker run RUN_DIR FILE...``. Chunks
submitted later (retries, an executor's new tasks) go out as further rounds. Results stream
back as each task's outcome file appears; failures are judged from soma-workflow's account of
each job (see ``cluster_runs``). The engine that drives soma-workflow runs in its own
detached process on the submitting host (``cluster_engine``), so a run outlives the process
that submitted it: ``remotemap collect RUN`` gets its results later.

Detached use, without a session: :func:`submit` (returns a run id at once), :func:`collect`,
:func:`cancel`, :func:`list_runs`; on the command line ``remotemap collect|cancel RUN`` and
``remotemap status``. See docs/cluster.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from remotemap.backends import cluster_engine
from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.cluster_files import (
    ClusterError,
    RunFiles,
    new_run_id,
    open_files,
    register,
    unregister,
)
from remotemap.backends.cluster_runs import ClusterRun
from remotemap.errors import BackendUnavailable, TaskFailure
from remotemap.execution import pickle_function
from remotemap.tasks import Chunk, ChunkResult, auto_chunksize

if TYPE_CHECKING:
    pass

log = logging.getLogger("remotemap")

SCHEDULERS = ("local", "slurm", "pbspro", "drmaa")
#: Jobs a round aims at on a batch scheduler when ``tasks_per_job`` is 0 (automatic).
AUTO_JOBS = 32
#: Seconds ``close`` waits for the engines to stop their jobs and exit.
CLOSE_TIMEOUT = 90.0

__all__ = ["ClusterBackend", "ClusterError", "ClusterSession", "cancel", "collect",
           "list_runs", "submit"]


# -- settings -----------------------------------------------------------------------------------
def cluster_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[cluster]`` section's defaults, overridden by ``given``, checked; JSON-able."""
    from remotemap.config.schema import SCHEMA, defaults_of

    settings = {**defaults_of(SCHEMA["cluster"]), **dict(given)}
    if settings["scheduler"] not in SCHEDULERS:
        raise ValueError(f"cluster.scheduler: {settings['scheduler']!r} is not one of "
                         f"{', '.join(SCHEDULERS)}")
    if settings["walltime"]:
        walltime_seconds(settings["walltime"])  # refuse a malformed one now
    for option in settings["native_options"]:
        if "\n" in option or not option.strip():
            raise ValueError(f"cluster.native_options: bad option {option!r}")
    return settings


def walltime_seconds(text: str) -> int:
    """Slurm's time formats ("M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S") in seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"cluster.walltime: {text!r} is not a time limit (minutes, M:S, "
                         "H:M:S, D-H, D-H:M or D-H:M:S)")
    days, first, second, third = match.groups()
    numbers = [int(first)] + [int(n) for n in (second, third) if n is not None]
    if days is not None:
        hours, minutes, seconds = [*numbers, 0, 0][:3]
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(numbers) == 3:
        return numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    return numbers[0] * 60 + (numbers[1] if len(numbers) == 2 else 0)


def native_options(settings: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The scheduler options (``#SBATCH``/``#PBS`` lines) and the config key each comes from."""
    scheduler = settings["scheduler"]
    options: list[tuple[str, str]] = []
    if scheduler in ("slurm", "drmaa"):
        for key, flag in (("walltime", "--time"), ("memory", "--mem"),
                          ("cpus_per_task", "--cpus-per-task")):
            if settings[key]:
                options.append((f"cluster.{key}", f"{flag}={settings[key]}"))
    elif scheduler == "pbspro":
        if settings["walltime"]:
            hours, rest = divmod(walltime_seconds(settings["walltime"]), 3600)
            wall = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
            options.append(("cluster.walltime", f"-l walltime={wall}"))
        if settings["memory"]:
            options.append(("cluster.memory", f"-l mem={settings['memory']}"))
        if settings["cpus_per_task"]:
            options.append(("cluster.cpus_per_task", f"-l ncpus={settings['cpus_per_task']}"))
    if scheduler != "local":
        options += [("cluster.native_options", o) for o in settings["native_options"]]
    return [o for _, o in options], [k for k, _ in options]


def tasks_per_job(settings: Mapping[str, Any], n_tasks: int) -> int:
    if settings.get("tasks_per_job"):
        return int(settings["tasks_per_job"])
    if settings["scheduler"] == "local":
        cpus = (os.cpu_count() or 1) if not settings.get("host") else 4
        return auto_chunksize(n_tasks, cpus)
    return max(1, math.ceil(n_tasks / AUTO_JOBS))


def job_python(settings: Mapping[str, Any]) -> str:
    """The interpreter the jobs run (default: this one when this machine submits)."""
    return str(settings.get("python") or ("python3" if settings.get("host") else sys.executable))


def round_spec(settings: Mapping[str, Any], *, run_id: str, number: int,
               files: list[tuple[int, int]], env: Mapping[str, str],
               task_timeout: float | None, function: str) -> dict[str, Any]:
    """What the engine needs to run one round (written to ``RUN/rounds/N.json``)."""
    per_job = tasks_per_job(settings, len(files))
    ids = [f for f, _ in files]
    native, keys = native_options(settings)
    local = settings["scheduler"] == "local"
    return {
        "run_id": run_id, "round": number, "scheduler": settings["scheduler"],
        "python": job_python(settings), "queue": "" if local else settings["queue"],
        "native": native, "native_keys": keys, "slurm_conf": settings["slurm_conf"],
        "env": dict(env), "task_timeout": task_timeout,
        "wrapper_walltime": walltime_seconds(settings["walltime"])
        if local and settings["walltime"] else 0,
        "poll_interval": settings["poll_interval"], "tick": 0.1, "proc_nb": 0,
        "function": function, "files": files,
        "jobs": [ids[i : i + per_job] for i in range(0, len(ids), per_job)],
    }


def local_problem(settings: Mapping[str, Any], *, task_timeout: float | None = None) -> str | None:
    """What is missing on this machine to submit (None when ``cluster.host`` is another)."""
    if settings.get("host"):
        return None
    return cluster_engine.preflight(
        settings["scheduler"], settings["slurm_conf"],
        needs_timeout=bool(task_timeout or (settings["walltime"] and
                                            settings["scheduler"] == "local")))


def function_name(function: Callable[..., Any]) -> str:
    return str(getattr(function, "__qualname__", type(function).__name__))


def create_run(settings: dict[str, Any], blob: bytes, *, function: str,
               env: Mapping[str, str], n_tasks: int | None, detached: bool) -> ClusterRun:
    """A new run directory in ``shared_dir`` on the submitting host, registered."""
    from remotemap.worker import SYS_PATH_ENV

    run_id = new_run_id()
    shared = str(settings["shared_dir"])
    if not settings.get("host"):
        shared = os.path.join(os.path.expanduser("~"), os.path.expanduser(shared))
    files: RunFiles = open_files(settings, posixpath.join(shared, run_id))
    try:
        env = dict(env)
        if not settings.get("host"):  # same machine: modules found through our sys.path too
            env.setdefault(SYS_PATH_ENV, json.dumps(sys.path))
        run = ClusterRun.create(files, run_id, settings, blob, function=function, env=env,
                                n_tasks=n_tasks)
    except BaseException:
        files.close()
        raise
    register({"run_id": run_id, "root": files.root, "settings": settings,
              "function": function, "n_tasks": n_tasks, "created": time.time(),
              "detached": detached, "pid": os.getpid()})
    return run


# -- the backend --------------------------------------------------------------------------------
class ClusterBackend(Backend):
    name = "cluster"
    isolates_crashes = True

    @classmethod
    def unavailable_reason(cls, settings: Mapping[str, Any]) -> str | None:
        """soma-workflow and the scheduler's commands, checked on this machine unless the
        call's settings name another submitting host (``host``)."""
        if settings.get("host"):
            return None  # checked there when a run starts
        return cluster_engine.preflight(str(settings.get("scheduler") or "local"),
                                        check_conf=False)

    def chunksize(self, n_tasks: int) -> int:
        return tasks_per_job(cluster_settings(self.settings), n_tasks)

    def open(self, function: Callable[..., Any], options: TaskOptions) -> ClusterSession:
        settings = cluster_settings(self.settings)
        problem = local_problem(settings, task_timeout=options.timeout)
        if problem:
            raise BackendUnavailable(f"mode 'cluster' cannot run here: {problem}")
        return ClusterSession(settings, pickle_function(function), options,
                              function_name(function))

class ClusterSession(Session):
    """Chunks collected until ``wait``, then submitted as one round; results as they come."""

    capacity = 1 << 30  # everything the driver has goes into the first round

    def __init__(self, settings: dict[str, Any], blob: bytes, options: TaskOptions,
                 function: str) -> None:
        self.settings = settings
        self.blob = blob
        self.options = options
        self.function = function
        self.run: ClusterRun | None = None
        self._pending: list[Chunk] = []
        self._left: dict[int, int] = {}  # chunk id -> its tasks not resolved yet
        self._chunk_of: dict[int, int] = {}  # task index -> chunk id
        self._ready: list[ChunkResult] = []
        self._wake = threading.Event()
        self._closed = False
        self._interval = 0.3 if settings.get("host") else 0.05

    @property
    def in_flight(self) -> int:
        return len(self._left)

    def submit(self, chunk: Chunk) -> None:
        self._pending.append(chunk)
        self._left[chunk.id] = len(chunk.indices)
        self._chunk_of.update(dict.fromkeys(chunk.indices, chunk.id))

    def _launch(self) -> None:
        chunks, self._pending = self._pending, []
        if self.run is None:
            self.run = create_run(self.settings, self.blob, function=self.function,
                                  env=self.options.env, n_tasks=None, detached=False)
            log.info("cluster run %s in %s:%s", self.run.run_id, self.run.files.label,
                     self.run.files.root)
        tasks = [task for c in chunks for task in zip(c.indices, c.largs, c.lkwargs, strict=True)]
        self._deliver([], self.run.add_tasks(tasks, task_timeout=self.options.timeout))

    def _deliver(self, values: list[tuple[int, Any]], failures: list[TaskFailure]) -> None:
        results: dict[int, ChunkResult] = {}
        for index, value in values:
            chunk_id = self._chunk_of.pop(index, None)
            if chunk_id is not None:
                result = results.setdefault(chunk_id, ChunkResult(chunk_id))
                result.indices.append(index)
                result.values.append(value)
        for failure in failures:
            chunk_id = self._chunk_of.pop(failure.index, None)
            if chunk_id is not None:
                results.setdefault(chunk_id, ChunkResult(chunk_id)).failures.append(failure)
        for chunk_id, result in results.items():
            self._left[chunk_id] -= len(result.indices) + len(result.failures)
            if self._left[chunk_id] <= 0:
                del self._left[chunk_id]
        self._ready += results.values()

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        if self._pending:
            self._launch()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready and self._left and self.run is not None:
            self._deliver(*self.run.poll())
            if self._ready:
                break
            left = self._interval if deadline is None else min(self._interval,
                                                                deadline - time.monotonic())
            if left <= 0:
                break
            if self._wake.wait(left):
                self._wake.clear()
                break
        results, self._ready = self._ready, []
        return results

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        run, self.run = self.run, None
        if run is not None:
            close_run(run, self.settings)


def close_run(run: ClusterRun, settings: Mapping[str, Any]) -> None:
    """Stop the run's jobs still out, then remove its directory (unless ``keep_files``)."""
    try:
        if run.pending:
            try:
                run.cancel()
            except OSError as exc:  # a full disk, the directory removed: the error that
                # ended the run says more than this one, which must not replace it
                log.warning("cluster run %s: cannot ask its jobs to stop in %s:%s: %s",
                            run.run_id, run.files.label, run.files.root, exc)
        if not run.wait_ended(CLOSE_TIMEOUT):
            log.warning("cluster run %s: its jobs did not all stop within %.0f s; the run "
                        "is kept in %s:%s (remotemap cancel %s)", run.run_id, CLOSE_TIMEOUT,
                        run.files.label, run.files.root, run.run_id)
        elif settings["keep_files"]:
            log.info("kept the cluster run directory %s:%s", run.files.label, run.files.root)
        else:
            run.remove()
            unregister(run.run_id)
    finally:
        run.files.close()


from remotemap.backends.cluster_detach import cancel, collect, list_runs, submit  # noqa: E402
