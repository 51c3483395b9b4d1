"""``local``: worker processes on this machine (loky, the executor joblib runs on), in chunks.

Chunking is what keeps tiny tasks cheap: the dispatch cost is paid once per chunk instead of
once per task. The function is pickled once per run and cached in each worker. The executor is
driven through its futures rather than ``joblib.Parallel``, whose result loop polls every
10 ms: on a run of many tiny tasks that sleep costs more than the tasks.

The standalone ``loky`` package, not the copy inside joblib: loky keeps one process-wide
reusable pool per copy, and sharing joblib's broke the caller's own later ``joblib.Parallel``
calls (and restarted their workers). Its workers also start without importing joblib and
numpy, which cuts the first result of a run from ~0.6 s to ~0.15 s.

Two things a pool of shared workers cannot do go to a ``local_with_dumps`` session, one
process per task: tasks with a timeout (a task over it must be killed without killing the
pool), and, after a task killed its worker (which breaks the whole pool), every task that had
not finished - so the task that crashes fails by itself with its exit code or signal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.dumps import DumpsSession
from remotemap.backends.local_fork import ForkedChunk, fork_is_safe
from remotemap.backends.local_options import LOCAL
from remotemap.buffers import BufferSpill, PackedChunk, unmap, unpack
from remotemap.config import resolve_n_jobs
from remotemap.execution import (
    PICKLING_ERRORS,
    chunk_failed,
    dumps_result,
    failure_from_exception,
    find_unpicklable,
    loads,
    loads_result,
    pickle_function,
    run_chunk,
)
from remotemap.leftovers import Stdio, become_subreaper, kill_children
from remotemap.progress import ChunkWatch, TaskCounter
from remotemap.protocol import new_token
from remotemap.staged import CALLER_CWD_ENV
from remotemap.tasks import Chunk, ChunkResult, auto_chunksize

log = logging.getLogger("remotemap")

# Worker-side cache: the function of the current run, unpickled once per worker process.
_FUNCTIONS: dict[str, Callable[..., Any]] = {}
# Worker-side: stdout and stderr as the worker started, put back after a task closed them.
_STDIO: list[Stdio] = []
# Worker-side: what counts the running chunk's tasks for a progress bar, started when needed.
_WATCH: list[ChunkWatch] = []


def _watch() -> ChunkWatch:
    if not _WATCH:
        _WATCH.append(ChunkWatch())
    return _WATCH[0]


def _init_worker() -> None:
    """Worker initializer: follow the caller's life, and adopt what tasks leave running."""
    _watch_parent()
    become_subreaper()
    _STDIO.append(Stdio())


def _watch_parent() -> None:
    """Worker initializer: exit when the caller dies (even by SIGKILL, which leaves no chance
    to stop the pool), instead of lingering as an orphan."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="remotemap-watch-parent", daemon=True).start()


def _run_in_worker(token: str, blob: bytes, sys_path: list[str], packed: PackedChunk,
                   counter: tuple[str, int] | None = None,
                   span: tuple[int, int] | None = None) -> bytes:
    function = _FUNCTIONS.get(token)
    indices = packed.indices if span is None else list(range(*span))
    try:
        if function is None:
            _FUNCTIONS.clear()  # one run at a time: do not keep old runs' functions alive
            # Workers outlive a run; the caller's sys.path may have grown since they started
            # (a notebook's sys.path.append), and the function may need it to load.
            sys.path[:0] = [p for p in sys_path if p not in sys.path]
            function = _FUNCTIONS[token] = loads(blob)
        chunk, mappings = unpack(packed)
        chunk.indices = indices
    except Exception as exc:
        return dumps_result(chunk_failed(Chunk(packed.id, indices, [], []), exc))
    try:
        if counter is None:
            return _dumps_result(run_chunk(function, chunk), span)
        try:
            return _dumps_result(run_chunk(function, chunk, started=_watch().watch(counter)),
                                 span)
        finally:
            _watch().unwatch()  # before the result goes: the caller then frees the slot
    finally:
        del chunk  # the last reference to the arguments here: their files may be unmapped
        unmap(mappings)
        # What the chunk's tasks left behind must not reach the next chunk in this worker.
        kill_children()
        for stdio in _STDIO:
            stdio.repair()


#: The token of a result whose indices went as a range: every task of the chunk's span, in order.
_SPAN = "span"


def _span(chunk: Chunk) -> tuple[int, int] | None:
    """A chunk's consecutive indices (every first attempt) as (start, stop): they then cross
    to the worker and back as two numbers, not a list of ints pickled each way."""
    return (chunk.indices[0], chunk.indices[-1] + 1) if chunk.consecutive and chunk.indices \
        else None


def _dumps_result(result: ChunkResult, span: tuple[int, int] | None) -> bytes:
    if span is None or result.failures:
        return dumps_result(result)
    # No task failed: the indices are the span's. A range pickles as three numbers;
    # _loads_result makes it a list again, before anything else sees it.
    result.indices = range(*span)  # type: ignore[assignment]
    return dumps_result(result, _SPAN)


def _loads_result(data: bytes) -> ChunkResult:
    token, result = loads_result(data)
    if token == _SPAN:
        result.indices = list(result.indices)
    return result


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
        self.futures: dict[Future[bytes], Chunk] = {}
        self.ready: list[ChunkResult] = []
        self.spill = BufferSpill()
        self.isolated: DumpsSession | None = None
        # The first chunk, in a child forked from the caller while the pool starts (or instead
        # of starting it, for a call of one chunk): see local_fork. Used once per session.
        self.forked: ForkedChunk | None = None
        self.forked_chunk: tuple[Chunk, int | None] | None = None
        self._may_fork = not options.env  # env must be set before the worker's imports
        self._executor: Any = None
        self._wake: Future[None] = Future()
        self._broken_logged = False
        # Per-task progress (count_running): each running chunk's slot in the counter.
        self.counter: TaskCounter | None = None
        self.slots: dict[Future[bytes], int] = {}

    def _pool(self) -> Any:
        if self._executor is None:
            from loky import get_reusable_executor

            # env: loky restarts its workers when it changes, so they import with it set.
            self._executor = get_reusable_executor(max_workers=self.n_jobs,
                                                   env=dict(self.options.env) or None,
                                                   initializer=_init_worker)
        return self._executor

    def _isolated(self) -> DumpsSession:
        if self.isolated is None:
            self.isolated = DumpsSession(self.blob, self.options, n_jobs=self.n_jobs)
        return self.isolated

    @property
    def in_flight(self) -> int:
        isolated = self.isolated.in_flight if self.isolated is not None else 0
        forked = self.forked.in_flight if self.forked is not None else 0
        return len(self.futures) + len(self.ready) + isolated + forked

    def submit(self, chunk: Chunk) -> None:
        if self.options.timeout is not None:
            for single in _singles(chunk):
                self._isolated().submit(single)
            return
        try:
            packed = self.spill.pack(chunk)
        except PICKLING_ERRORS:
            keep, failures = find_unpicklable(chunk)
            self.ready.append(ChunkResult(chunk.id, failures=failures))
            if not keep.indices:
                return
            chunk, packed = keep, self.spill.pack(keep)
        slot = self.counter.take() if self.counter is not None else None
        where = None if slot is None or self.counter is None else (self.counter.path, slot)
        span = _span(chunk)
        if span is not None:  # the worker rebuilds the indices from the span
            packed = PackedChunk(packed.id, [], packed.data, packed.buffer_files)
        if self._fork(chunk, packed, where, slot, span):
            return
        call = (_run_in_worker, self.token, self.blob, self.sys_path, packed, where, span)
        try:
            future = self._pool().submit(*call)
        except BrokenProcessPool:
            # A worker died and loky flagged the pool before a wait() saw the failed future:
            # the chunks it held come back through their futures; this one goes to a new pool.
            self._executor = None
            future = self._pool().submit(*call)
        self.futures[future] = chunk
        if slot is not None:
            self.slots[future] = slot

    def _fork(self, chunk: Chunk, packed: PackedChunk, where: tuple[str, int] | None,
              slot: int | None, span: tuple[int, int] | None) -> bool:
        """Run the session's first chunk in a forked child, if fork is safe now."""
        if not self._may_fork:
            return False
        self._may_fork = False
        if self._executor is not None or not fork_is_safe():
            return False
        token, blob, sys_path = self.token, self.blob, self.sys_path

        def run() -> bytes:  # in the child
            _init_worker()
            return _run_in_worker(token, blob, sys_path, packed, where, span)

        self.forked = ForkedChunk()
        self.forked.start(run)
        self.forked_chunk = (chunk, slot)
        return True

    def _wait_forked(self, timeout: float | None) -> list[ChunkResult]:
        assert self.forked is not None and self.forked_chunk is not None
        ended = self.forked.wait(timeout)
        if ended is None:
            return []
        (chunk, slot), self.forked_chunk = self.forked_chunk, None
        if slot is not None and self.counter is not None:
            self.counter.release(slot)
        self.spill.release(chunk.id)
        data, status = ended
        if status == "exit:0":
            return [_loads_result(data)]
        # As when a pool worker dies: its tasks run again, one process each, so the task that
        # crashed fails alone with its exit code or signal.
        log.warning("the forked local worker ended abnormally (%s); its tasks run again, one "
                    "process each", status)
        for single in _singles(chunk):
            self._isolated().submit(single)
        return []

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        results, self.ready = self.ready, []
        isolated = self.isolated if self.isolated is not None and self.isolated.in_flight else None
        forked = self.forked is not None and self.forked.in_flight > 0
        if forked and (isolated is not None or self.futures):  # several kinds: each briefly
            timeout = 0.05 if timeout is None else min(timeout, 0.05)
        if forked:
            results += self._wait_forked(0 if results else timeout)
        if isolated is not None:
            results += isolated.wait(0 if (results or self.futures) else timeout)
        if results or not self.futures:
            return results
        if isolated is not None:  # both kinds running: look at each in turn, briefly
            timeout = 0.05 if timeout is None else min(timeout, 0.05)
        watched: list[Future[Any]] = [*self.futures, self._wake]
        done, _ = wait(watched, timeout, return_when=FIRST_COMPLETED)
        if self._wake.done():
            self._wake = Future()
        for future in done:
            chunk = self.futures.pop(future, None)
            if chunk is None:
                continue  # the wake-up
            slot = self.slots.pop(future, None)
            if slot is not None and self.counter is not None:
                self.counter.release(slot)
            error = future.exception()
            # A broken pool's other workers may still map their files while loky stops them.
            self.spill.release(chunk.id, reuse=error is None)
            if isinstance(error, BrokenProcessPool):
                self._worker_died(chunk, error)
            elif error is not None:  # raised outside any task (loky's own pickling, say)
                results.append(_chunk_error(chunk, error))
            else:
                results.append(_loads_result(future.result()))
        return results

    def _worker_died(self, chunk: Chunk, exc: BaseException) -> None:
        if not self._broken_logged:
            self._broken_logged = True
            log.warning("a local worker process died (%s); the unfinished tasks run again, "
                        "one process each", _exit_codes(exc))
        self._executor = None  # the pool is broken; the next submission gets a new one
        for single in _singles(chunk):
            self._isolated().submit(single)

    def count_running(self) -> Callable[[], int] | None:
        # Chunks through the isolated session (timeouts, after a crash) hold one task each:
        # their results already come per task.
        if self.counter is None:
            self.counter = TaskCounter(self.capacity)
        return self.counter.running

    def wake(self) -> None:
        wake = self._wake
        if not wake.done():
            with contextlib.suppress(Exception):  # set by another thread meanwhile
                wake.set_result(None)
        if self.isolated is not None:
            self.isolated.wake()
        if self.forked is not None:
            self.forked.wake()

    def close(self) -> None:
        if self.futures and self._executor is not None:
            # Leaving early (fail fast, Ctrl-C): stop what is still running.
            for future in self.futures:
                future.cancel()
            self._executor.shutdown(wait=False, kill_workers=True)
        if self.forked is not None:
            self.forked.close()
            self.forked = self.forked_chunk = None
        self.futures.clear()
        self.slots.clear()
        self.ready = []
        self.spill.close()
        if self.counter is not None:
            self.counter.close()
        if self.isolated is not None:
            self.isolated.close()


def _chunk_error(chunk: Chunk, error: BaseException) -> ChunkResult:
    """Each task of ``chunk`` fails with ``error``, which the worker raised around the tasks."""
    return ChunkResult(chunk.id, failures=[failure_from_exception(i, error, kind="lost")
                                           for i in chunk.indices])


def _exit_codes(exc: BaseException) -> str:
    text = str(exc)
    marker = "The exit codes of the workers are "
    return text.split(marker)[-1].split("\n")[0] if marker in text else type(exc).__name__
