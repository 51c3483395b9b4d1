"""A Session over any ``concurrent.futures`` executor: ``remote_map(..., executor=pool)``.

The executor (a ``ThreadPoolExecutor``, a ``ProcessPoolExecutor``, loky's, a dask client's
``get_executor()``, ...) only runs chunks; the driver keeps owning what makes remotemap's
contract (retries, fail-fast, resume with ``run_dir``, ``RemoteException`` with every failure
and the partial results), as for any mode. Each chunk is one call of the executor:

- on a thread pool it is ``run_chunk(function, chunk)`` itself (nothing pickled, as
  ``serial``);
- on any other executor, the function and the chunk go as cloudpickled bytes and the result
  comes back as ``dumps_result`` bytes, so lambdas and closures cross whatever pickler the
  executor uses, and an argument or result that cannot be pickled fails its own task
  (kind ``"pickling"``), as in every out-of-process mode.

``timeout=`` and ``env=`` need each call to run alone in the main thread of a worker process
(SIGALRM, ``os.environ``): the standard library's and loky's process pools do; thread pools
and dask (whose workers run tasks on threads) do not, and are refused before anything runs.
A running call cannot be taken back from an executor: stopping a run (``on_error="stop"``,
Ctrl-C) cancels the chunks not started; the running ones finish in the executor, which is left
open (it is the caller's).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from remotemap.backends.serial import _alarm, _as_timeout, _environment
from remotemap.capture import merge_outputs
from remotemap.execution import (
    PICKLING_ERRORS,
    chunk_failed,
    dumps,
    dumps_result,
    find_unpicklable,
    loads,
    loads_result,
    lost_chunk_result,
    pickle_function,
    run_chunk,
)
from remotemap.session import Backend, Session, TaskOptions
from remotemap.tasks import Chunk, ChunkResult, auto_chunksize

#: Each submission is unique: dask names a task by its function and arguments, so a retried
#: chunk with the same bytes would otherwise get the first attempt's result back.
_submissions = itertools.count()


def runs_in_worker_main_thread(executor: concurrent.futures.Executor) -> bool:
    """Whether ``executor`` runs each call alone in the main thread of a worker process."""
    pools: list[type] = [concurrent.futures.ProcessPoolExecutor]
    loky = sys.modules.get("loky.process_executor")  # loaded if a loky pool exists
    if loky is not None:
        pools.append(loky.ProcessPoolExecutor)
    return isinstance(executor, tuple(pools))


def executor_backend(executor: concurrent.futures.Executor,
                     options: TaskOptions) -> ExecutorBackend:
    """The backend running chunks on ``executor``; ValueError before anything runs if the
    executor cannot honour ``options`` (a timeout or an environment)."""
    if not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got "
                        f"{type(executor).__name__}: {executor!r:.80}")
    cls = InProcessExecutorBackend if isinstance(
        executor, concurrent.futures.ThreadPoolExecutor) else ExecutorBackend
    backend = cls(executor)
    backend.check(options)
    return backend


class ExecutorBackend(Backend):
    """Chunks as calls of a ``concurrent.futures`` executor, pickled by remotemap."""

    name = "executor"
    #: Calls run elsewhere, pickled: what they do to their process is not this one's.
    pickled: ClassVar[bool] = True

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        super().__init__({})
        self.executor = executor
        #: How many calls the executor runs at once, as far as can be told.
        self.workers = _workers_of(executor)

    def check(self, options: TaskOptions) -> None:
        if runs_in_worker_main_thread(self.executor):
            return
        wanted = [name for name, value in (("timeout", options.timeout), ("env", options.env))
                  if value]
        if wanted:
            raise ValueError(
                f"{' and '.join(wanted)} cannot be honoured on a "
                f"{type(self.executor).__module__}.{type(self.executor).__qualname__}: "
                f"remotemap stops a task and sets its environment only where each call runs "
                f"alone in the main thread of a worker process, as in a ProcessPoolExecutor "
                f"(the standard library's or loky's); thread pools and dask run calls on "
                f"threads. Use a process pool or a remotemap mode")

    def chunksize(self, n_tasks: int) -> int:
        return auto_chunksize(n_tasks, self.workers)

    def open(self, function: Callable[..., Any], options: TaskOptions) -> Session:
        self.check(options)
        return ExecutorSession(self, function, options)


def _workers_of(executor: concurrent.futures.Executor) -> int:
    """Calls at once: the standard pools' and loky's ``_max_workers``, a dask client's threads,
    else this machine's CPUs (a guess: it only sizes chunks and how many are out at once)."""
    workers = getattr(executor, "_max_workers", None)
    client = getattr(executor, "_client", None)  # distributed's ClientExecutor
    if workers is None and client is not None and hasattr(client, "nthreads"):
        try:
            workers = sum(client.nthreads().values())
        except Exception:  # a client that cannot tell: fall back to the guess
            workers = None
    return workers if isinstance(workers, int) and workers > 0 else os.cpu_count() or 1


class InProcessExecutorBackend(ExecutorBackend):
    """A thread pool: chunks run in this process, nothing pickled."""

    isolates_crashes = False
    pickled = False


def run_pickled(function_blob: bytes, chunk_blob: bytes, options: TaskOptions,
                submission: int) -> bytes:
    """One chunk, in whatever process the executor runs it; the result as bytes."""
    del submission  # only there to make the call unique
    chunk: Chunk = loads(chunk_blob)
    try:
        function = loads(function_blob)
    except BaseException as exc:  # a module missing where it runs: every task fails
        return dumps_result(chunk_failed(chunk, exc))
    with _environment(options.env):
        if options.timeout is None:
            return dumps_result(run_chunk(function, chunk))
        indices: list[int] = []  # the result's, gathered here
        result = ChunkResult(chunk.id, indices)
        for one in (Chunk(chunk.id, [i], [a], [k]) for i, a, k in
                    zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True)):
            with _alarm(options.timeout):
                part = run_chunk(function, one)
            indices += part.indices
            result.values += part.values
            result.failures += [_as_timeout(f) for f in part.failures]
            result.timings.update(part.task_times())
            result.worker = part.worker
            merge_outputs(result, part)
        return dumps_result(result)


class ExecutorSession(Session):
    """Chunks submitted to the executor; results handed over by the futures' callbacks."""

    def __init__(self, backend: ExecutorBackend, function: Callable[..., Any],
                 options: TaskOptions) -> None:
        self.executor = backend.executor
        self.pickled = backend.pickled
        self.function = function
        self.function_blob = pickle_function(function) if self.pickled else b""
        self.options = options
        self.capacity = 2 * backend.workers  # every worker busy, and the next chunk ready
        self.done: queue.SimpleQueue[ChunkResult | None] = queue.SimpleQueue()
        #: Futures not done yet (their callbacks run in the executor's threads).
        self.futures: set[concurrent.futures.Future[Any]] = set()
        self.lock = threading.Lock()
        self.pending = 0
        self.where = f"{type(self.executor).__qualname__}"

    def submit(self, chunk: Chunk) -> None:
        self.pending += 1
        try:
            future = self._call(chunk)
        except BaseException as exc:  # shut down or broken: the chunk fails, the run goes on
            self.done.put(lost_chunk_result(
                chunk, f"could not be given the task: {self.where}.submit raised "
                       f"{type(exc).__name__}: {exc}", kind="lost"))
            return
        if future is None:
            return
        with self.lock:
            self.futures.add(future)
        future.add_done_callback(lambda f: self._finished(chunk, f))

    def _call(self, chunk: Chunk) -> concurrent.futures.Future[Any] | None:
        if not self.pickled:
            return self.executor.submit(run_chunk, self.function, chunk)
        try:
            blob = dumps(chunk)
        except PICKLING_ERRORS:  # some argument will not pickle: those tasks fail, the rest go
            chunk, failures = find_unpicklable(chunk)
            self.done.put(ChunkResult(chunk.id, failures=failures))
            if not chunk.indices:
                return None
            self.pending += 1
            blob = dumps(chunk)
        return self.executor.submit(run_pickled, self.function_blob, blob, self.options,
                                    next(_submissions))

    def _finished(self, chunk: Chunk, future: concurrent.futures.Future[Any]) -> None:
        # Called in whatever thread completed the future: only hand the result over.
        with self.lock:
            self.futures.discard(future)
        if future.cancelled():
            result = lost_chunk_result(chunk, f"was cancelled by {self.where}",
                                       kind="cancelled")
        elif (error := future.exception()) is not None:
            result = self._call_failed(chunk, error)
        elif self.pickled:
            result = loads_result(future.result())[1]
        else:
            result = future.result()
        self.done.put(result)

    def _call_failed(self, chunk: Chunk, error: BaseException) -> ChunkResult:
        """The executor failed the call itself (``run_chunk`` catches the tasks' errors):
        its worker died, or the executor broke."""
        if isinstance(error, concurrent.futures.process.BrokenProcessPool) or \
                type(error).__name__ == "TerminatedWorkerError":  # loky's
            return lost_chunk_result(chunk, f"died ({self.where}: {error})", kind="crash")
        failed = chunk_failed(chunk, error)
        return ChunkResult(chunk.id, failures=[dataclasses.replace(f, kind="lost")
                                               for f in failed.failures])

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        try:
            got = [self.done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self.done.empty():
            got.append(self.done.get())
        results = [r for r in got if r is not None]  # None: woken by wake()
        self.pending -= len(results)
        return results

    @property
    def in_flight(self) -> int:
        return self.pending

    def wake(self) -> None:
        self.done.put(None)

    def close(self) -> None:
        # The executor is the caller's: it stays open. What has not started never will.
        with self.lock:
            futures, self.futures = list(self.futures), set()
        for future in futures:
            future.cancel()

