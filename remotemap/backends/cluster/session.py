"""The ``cluster`` backend and its session, and the making and closing of a run.

A session collects the chunks it is given and, when ``wait`` is first called, submits them as
one round (see the package docstring); chunks submitted later (retries, an executor's new
tasks) go out as further rounds. Results stream back from ``ClusterRun.poll``.
:func:`create_run` and :func:`close_run` also serve detached runs (``detached``) and
workflows on the cluster (``remotemap.workflow.on_cluster``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.cluster import layout
from remotemap.backends.cluster.checks import preflight
from remotemap.backends.cluster.files import LocalFiles, RunFiles, open_files
from remotemap.backends.cluster.handover import REQUEST, request_body, round_over
from remotemap.backends.cluster.limits import check_partition
from remotemap.backends.cluster.options import CLUSTER
from remotemap.backends.cluster.pending import describe_reasons, worrying
from remotemap.backends.cluster.registry import entry_path, register, unregister
from remotemap.backends.cluster.runs import ClusterRun
from remotemap.backends.cluster.settings import cluster_settings, poll_interval, tasks_per_job
from remotemap.errors import BackendUnavailable, TaskFailure
from remotemap.execution import pickle_function
from remotemap.state import new_run_id
from remotemap.tasks import Chunk, ChunkResult

log = logging.getLogger("remotemap")

#: Seconds ``close`` waits for the engines to stop their jobs and exit.
CLOSE_TIMEOUT = 90.0


def local_problem(settings: Mapping[str, Any], *, task_timeout: float | None = None) -> str | None:
    """What is missing on this machine to submit (None when ``cluster.host`` is another)."""
    if settings.get("host"):
        return None
    return preflight(
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
        fit = check_partition(files, settings)  # before anything is made, here or there
        if fit is not None:  # automatic worker slots: no more than the partition's nodes take
            settings = {**settings, "slots_that_fit": fit}
        env = dict(env)
        if not settings.get("host"):  # same machine: modules found through our sys.path too
            env.setdefault(SYS_PATH_ENV, json.dumps(sys.path))
        run = ClusterRun.create(files, run_id, settings, blob, function=function, env=env,
                                n_tasks=n_tasks)
        stage_inputs(run, settings)
    except BaseException:
        files.close()
        raise
    register({"run_id": run_id, "root": files.root, "settings": settings,
              "function": function, "n_tasks": n_tasks, "created": time.time(),
              "detached": detached, "pid": os.getpid()})
    return run


def stage_inputs(run: ClusterRun, settings: Mapping[str, Any]) -> None:
    """Inputs go through the submitting host's shared directory: the run-wide ones now, each
    task's own when it is staged (``ClusterRun.stage``); the jobs learn where from their
    environment."""
    from remotemap.backends.cluster.files import SSHFiles
    from remotemap.backends.staging import HostStaging, cluster_plan, never
    from remotemap.backends.staging_targets import LocalTarget, SSHTarget, Target

    files = run.files
    target: Target = SSHTarget(files.connection) if isinstance(files, SSHFiles) \
        else LocalTarget()
    staging = HostStaging(files.label, cluster_plan(settings, files.root))
    run.env.update(staging.open(target, 0, never))
    run.staging = (staging, target)


# -- the backend --------------------------------------------------------------------------------
class ClusterBackend(Backend):
    name = "cluster"
    config_section = CLUSTER
    isolates_crashes = True

    @classmethod
    def unavailable_reason(cls, settings: Mapping[str, Any]) -> str | None:
        """soma-workflow and the scheduler's commands, checked on this machine unless the
        call's settings name another submitting host (``host``)."""
        if settings.get("host"):
            return None  # checked there when a run starts
        return preflight(str(settings.get("scheduler") or "local"),
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
        self._interval = poll_interval(settings)
        self._waiting = ""  # why jobs wait, as last shown
        self._reasons: set[str] = set()

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
            self.run.hold_bulk = self.options.stop_on_error
            log.info("cluster run %s in %s:%s", self.run.run_id, self.run.files.label,
                     self.run.files.root)
        tasks = [task for c in chunks for task in zip(c.indices, c.largs, c.lkwargs, strict=True)]
        self._deliver([], self.run.add_tasks(tasks, task_timeout=self.options.timeout))

    def _deliver(self, values: list[tuple[int, Any]], failures: list[TaskFailure]) -> None:
        results: dict[int, ChunkResult] = {}
        gathered: dict[int, list[int]] = {}  # each result's indices, as a list to append to
        for index, value in values:
            chunk_id = self._chunk_of.pop(index, None)
            if chunk_id is None:
                continue
            if chunk_id not in results:
                results[chunk_id] = ChunkResult(chunk_id, gathered.setdefault(chunk_id, []))
            gathered[chunk_id].append(index)
            results[chunk_id].values.append(value)
        for failure in failures:
            chunk_id = self._chunk_of.pop(failure.index, None)
            if chunk_id is not None:
                results.setdefault(chunk_id, ChunkResult(chunk_id)).failures.append(failure)
        for chunk_id, result in results.items():
            if self.run is not None:
                self.run.take_outputs(result)
                self.run.take_times(result)
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
            self._say_why_waiting(self.run)
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

    def _say_why_waiting(self, run: ClusterRun) -> None:
        """SLURM's reasons for holding jobs back: on the progress bar while they last, in the
        log once per change of reasons (a WARNING, which prints, for one that may hold them
        for ever)."""
        counts = run.pending_reasons()
        text = describe_reasons(counts)
        if text and set(counts) != self._reasons:
            log.log(logging.WARNING if worrying(counts) else logging.INFO,
                    "cluster run %s waits: %s", run.run_id, text)
        self._reasons = set(counts)
        if text != self._waiting and self.show_status is not None:
            self.show_status(f"waiting: {text}" if text else "")
        self._waiting = text

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
    """Stop the run's jobs still out, then remove its directory (unless ``keep_files``): at
    once, or by its engines once they exit when every task has its outcome (``handover``)."""
    try:
        if run.pending:
            try:
                run.cancel()
            except OSError as exc:  # a full disk, the directory removed: the error that
                # ended the run says more than this one, which must not replace it
                log.warning("cluster run %s: cannot ask its jobs to stop in %s:%s: %s",
                            run.run_id, run.files.label, run.files.root, exc)
        elif not settings["keep_files"] and hand_over(run):
            log.debug("cluster run %s: its engines remove it once they exit", run.run_id)
            return
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


def hand_over(run: ClusterRun) -> bool:
    """Ask the run's engines to remove it once they all exited (``handover``); False when the
    caller must remove it: the engines run on another host (they cannot reach this machine's
    registry), one died, or all exited already."""
    if not isinstance(run.files, LocalFiles) or run.cancelled:
        return False
    over = _rounds_over(run)
    if not all(done or run.files.engine_running(n) for n, done in over.items()):
        return False  # an engine to start again: the caller's wait does that
    try:
        run.files.write_many({REQUEST: request_body([str(run.meta["key_file"]),
                                                     str(entry_path(run.run_id))])})
    except OSError as exc:  # a full disk: the caller ends the run itself, as before
        log.debug("cluster run %s: cannot leave its removal to its engines: %s", run.run_id, exc)
        return False
    # Read again after the request is written: if every engine exited meanwhile, none may
    # have seen it, and the caller removes the run (see handover's docstring).
    return not all(_rounds_over(run).values())


def _rounds_over(run: ClusterRun) -> dict[int, bool]:
    """Each round's number -> whether its status says it ended and its engine is gone."""
    return {n: round_over(run.files.read_json(layout.status_name(n))) for n in run.rounds}
