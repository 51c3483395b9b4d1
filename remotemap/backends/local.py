"""``local``: worker processes on this machine, in chunks.

Chunking is what keeps tiny tasks cheap: the dispatch cost is paid once per chunk instead of
once per task. The function is pickled once per run and cached in each worker
(``local_worker``). The workers are a pool of loky-started processes that read chunks from
pipes this session writes (``local_pool``: why not loky's executor itself), kept between calls
as loky's reusable executor is; their start imports neither joblib nor numpy, which cuts the
first result of a run from ~0.6 s to ~0.15 s, and a call's first chunk goes to a child forked
from the caller meanwhile (``local_fork``).

Two things a pool of shared workers cannot do go to a ``local_with_dumps`` session, one
process per task: tasks with a timeout (a task over it must be killed without killing the
pool), and, after a task killed its worker, every task that worker had not finished - so the
task that crashes fails by itself with its exit code or signal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.dumps import DumpsSession
from remotemap.backends.local_fork import ForkedChunk, fork_is_safe
from remotemap.backends.local_options import LOCAL
from remotemap.backends.local_pool import Died, WorkerPool, park, parked_pool_ready, take_pool
from remotemap.backends.local_worker import (
    chunk_span,
    init_worker,
    loads_span_result,
    run_in_worker,
)
from remotemap.buffers import BufferSpill
from remotemap.config import SHARED_BY_ENV, resolve_n_jobs, shared_by
from remotemap.execution import PICKLING_ERRORS, find_unpicklable, pickle_function
from remotemap.progress import TaskCounter
from remotemap.protocol import new_token
from remotemap.staged import CALLER_CWD_ENV
from remotemap.tasks import Chunk, ChunkResult, auto_chunksize

log = logging.getLogger("remotemap")

#: A chunk out to a worker, and its slot in the progress counter (None without a bar).
Job = tuple[Chunk, int | None]
#: Whether a call of this process has forked for its first chunk already (see _fork).
_forked_before: list[bool] = []


class LocalBackend(Backend):
    name = "local"
    config_section = LOCAL

    @property
    def n_jobs(self) -> int:
        return resolve_n_jobs(self.settings.get("n_jobs", 0))

    def chunksize(self, n_tasks: int) -> int:
        return int(self.settings.get("chunksize") or auto_chunksize(n_tasks, self.n_jobs))

    def chunk_spread(self) -> int:
        return 0 if self.settings.get("chunksize") else self.n_jobs  # a set chunksize is kept

    def open(self, function: Callable[..., Any], options: TaskOptions) -> LocalSession:
        if self.settings.get("send"):
            # loky's workers keep the working directory they started in, which may not be
            # this call's: staged_path("data/x") must mean what it means to the caller.
            env = {**options.env, CALLER_CWD_ENV: os.getcwd()}
            options = dataclasses.replace(options, env=env)
        return LocalSession(pickle_function(function), options, self.n_jobs)


def _singles(chunk: Chunk) -> Iterator[Chunk]:
    for index, args, kwargs in zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True):
        yield Chunk(chunk.id, [index], [args], [kwargs])


class LocalSession(Session):
    def __init__(self, blob: bytes, options: TaskOptions, n_jobs: int) -> None:
        self.blob = blob
        self.options = options
        self.n_jobs = n_jobs
        # Two chunks per worker in flight: a worker never waits for the next one.
        self.capacity = 2 * n_jobs
        self.token = new_token()
        self.sys_path = list(sys.path)
        self.pool: WorkerPool | None = None  # taken at the first chunk sent to it
        #: Chunks packed and not sent yet (every worker busy, the chunk too large to queue).
        self.unsent: deque[tuple[bytes, Job]] = deque()
        self.ready: list[ChunkResult] = []
        self.spill = BufferSpill()
        self.isolated: DumpsSession | None = None
        # The first chunk, in a child forked from the caller while the pool starts (or instead
        # of starting it, for a call of one chunk): see local_fork. Used once per session.
        self.forked: ForkedChunk | None = None
        self.forked_chunk: Job | None = None
        self._may_fork = not options.env  # env must be set before the worker's imports
        self._wake_r, self._wake_w = os.pipe()  # wake(): a byte in it ends a wait early
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._died_logged = False
        # Per-task progress (count_running): each running chunk's slot in the counter.
        self.counter: TaskCounter | None = None

    def _pool(self) -> WorkerPool:
        if self.pool is None:
            # The environment is the workers': a pool started with another one is replaced.
            # Each worker's tasks get their share of the CPUs, for calls they make themselves.
            env = {**self.options.env, SHARED_BY_ENV: shared_by(self.n_jobs)}
            self.pool = take_pool(self.n_jobs, env, run_in_worker, init_worker)
        return self.pool

    def _isolated(self) -> DumpsSession:
        if self.isolated is None:
            self.isolated = DumpsSession(self.blob, self.options, n_jobs=self.n_jobs)
        return self.isolated

    @property
    def in_flight(self) -> int:
        isolated = self.isolated.in_flight if self.isolated is not None else 0
        forked = self.forked.in_flight if self.forked is not None else 0
        pool = self.pool.busy if self.pool is not None else 0
        return pool + len(self.unsent) + len(self.ready) + isolated + forked

    def submit(self, chunk: Chunk) -> None:
        if self.options.timeout is not None:
            for single in _singles(chunk):
                self._isolated().submit(single)
            return
        try:
            packed = self.spill.pack(chunk, singles=True)
        except PICKLING_ERRORS:
            keep, failures = find_unpicklable(chunk)
            self.ready.append(ChunkResult(chunk.id, failures=failures))
            if not keep.indices:
                return
            chunk, packed = keep, self.spill.pack(keep, singles=True)
        slot = self.counter.take() if self.counter is not None else None
        where = None if slot is None or self.counter is None else (self.counter.path, slot)
        span = chunk_span(chunk)
        if span is not None:  # the worker rebuilds the indices from the span
            packed = dataclasses.replace(packed, indices=[])
        call = (self.token, self.blob, self.sys_path, packed, where, span)
        if not self._fork(call, (chunk, slot)):
            self.unsent.append((pickle.dumps(call, protocol=5), (chunk, slot)))
            self._send()

    def _send(self) -> None:
        # A child forked for the call's first chunk is one of the n_jobs: while it runs, the
        # pool holds one chunk fewer than that, none queued ahead (n_jobs=1: none at all).
        forking = self.forked is not None and self.forked.in_flight > 0
        while self.unsent:
            if forking and self._pool().busy >= self.n_jobs - 1:
                return  # after the forked chunk's result (wait)
            data, job = self.unsent[0]
            if not self._pool().send(data, job):
                return  # every worker busy: after the next result
            self.unsent.popleft()

    def _fork(self, call: tuple[Any, ...], job: Job) -> bool:
        """Run the session's first chunk in a forked child, if fork is safe now and no pool
        with its workers ready waits for it."""
        if not self._may_fork:
            return False
        self._may_fork = False
        if parked_pool_ready() or not fork_is_safe():
            return False

        share = shared_by(self.n_jobs)

        def run() -> bytes:  # in the child
            os.environ[SHARED_BY_ENV] = share  # as a pool worker's (see _pool)
            init_worker()
            return run_in_worker(*call)

        self.forked = ForkedChunk()
        self.forked.start(run)
        self.forked_chunk = job
        # A call of one chunk needs no pool, and a script's only call should not pay for one.
        # But calls that come again (a loop of small calls) would each fork (~5-15 ms here)
        # where a parked pool answers in ~1 ms: from the second, the pool starts meanwhile.
        if _forked_before:
            self._pool().start()
        _forked_before.append(True)
        return True

    def _wait_forked(self, timeout: float | None) -> list[ChunkResult]:
        assert self.forked is not None and self.forked_chunk is not None
        ended = self.forked.wait(timeout)
        if ended is None:
            return []
        job, self.forked_chunk = self.forked_chunk, None
        data, status = ended
        if status == "exit:0":
            return [self._answered(job, data)]
        # As when a pool worker dies: its tasks run again, one process each, so the task that
        # crashed fails alone with its exit code or signal.
        log.warning("the forked local worker ended abnormally (%s); its tasks run again, one "
                    "process each", status)
        self._lost(job)
        return []

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        results, self.ready = self.ready, []
        isolated = self.isolated if self.isolated is not None and self.isolated.in_flight else None
        forked = self.forked is not None and self.forked.in_flight > 0
        pooled = self.pool is not None and self.pool.busy > 0
        if forked and (isolated is not None or pooled):  # several kinds: each briefly
            timeout = 0.05 if timeout is None else min(timeout, 0.05)
        if forked:
            results += self._wait_forked(0 if results else timeout)
            if self.unsent and self.forked is not None and not self.forked.in_flight:
                self._send()  # what waited for the forked child's slot
        if isolated is not None:
            results += isolated.wait(0 if (results or pooled) else timeout)
        if not pooled or self.pool is None:
            return results
        if results:
            timeout = 0  # gather what else is in, without waiting
        elif isolated is not None:  # both kinds running: look at each in turn, briefly
            timeout = 0.05 if timeout is None else min(timeout, 0.05)
        answers, died = self.pool.wait(timeout, [self._wake_r])
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 64)  # a wake-up, if one came
        results += [self._answered(job, data) for job, data in answers]
        for dead in died:
            self._worker_died(dead)
        self._send()
        return results

    def _answered(self, job: Job, data: bytes) -> ChunkResult:
        chunk, slot = job
        if slot is not None and self.counter is not None:
            self.counter.release(slot)
        self.spill.release(chunk.id)
        return loads_span_result(data, chunk.indices)

    def _lost(self, job: Job) -> None:
        chunk, slot = job
        if slot is not None and self.counter is not None:
            self.counter.release(slot)
        # Not written over: the dead worker's files may still be mapped by its tasks' children.
        self.spill.release(chunk.id, reuse=False)
        for single in _singles(chunk):
            self._isolated().submit(single)

    def _worker_died(self, dead: Died) -> None:
        if not self._died_logged:
            self._died_logged = True
            log.warning("a local worker process died (%s); the unfinished tasks run again, "
                        "one process each", dead.status)
        for job in dead.jobs:
            self._lost(job)

    def count_running(self) -> Callable[[], int] | None:
        # Chunks through the isolated session (timeouts, after a crash) hold one task each:
        # their results already come per task.
        if self.counter is None:
            self.counter = TaskCounter(self.capacity)
        return self.counter.running

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
            os.write(self._wake_w, b"w")
        if self.isolated is not None:
            self.isolated.wake()
        if self.forked is not None:
            self.forked.wake()

    def close(self) -> None:
        if self.pool is not None:
            park(self.pool)  # leaving early (fail fast, Ctrl-C): its busy workers are killed
            self.pool = None
        if self.forked is not None:
            self.forked.close()
            self.forked = self.forked_chunk = None
        self.unsent.clear()
        self.ready = []
        self.spill.close()
        if self.counter is not None:
            self.counter.close()
        if self.isolated is not None:
            self.isolated.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
