"""``Executor``: concurrent.futures' interface on any remotemap mode.

``submit`` returns a :class:`concurrent.futures.Future`; ``result()`` blocks until the task is
done. A task that raised re-raises its own exception, its own type, rebuilt here, with a
:class:`RemoteTraceback` chained as ``__cause__``: the traceback as the worker saw it, and the
whole :class:`TaskFailure` as ``.failure`` (:func:`failure_of` finds it). Where the exception
cannot be rebuilt here (the task's process died, it timed out, its exception does not
unpickle), a :class:`RemoteException` holding that one failure stands in.

One dispatcher thread owns the backend session: it moves submissions into the session (at
most ``max_workers`` chunks at a time, changeable for later submissions), collects results,
retries failed attempts, and resolves the futures. As ``concurrent.futures`` promises, work
submitted is done before the interpreter exits, even after ``shutdown(wait=False)``: an exit
hook run before threads are joined shuts every executor down and waits for it. So that a
script ending right after ``submit`` loses nothing, the first ``submit`` returns once the
backend has started (ProcessPoolExecutor too starts its processes in ``submit``). An executor
dropped without ``shutdown`` finishes its work, then frees its workers.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from remotemap.api import EXECUTOR_OPTIONS, configured_stream, make_backend, run_config
from remotemap.backends.base import Backend, Session
from remotemap.backends.foreign_executor import executor_backend
from remotemap.call_options import Mode, ModeName
from remotemap.config import Config
from remotemap.driver import Policy, RetrySchedule, Work, dispatch, make_policy, open_streaming
from remotemap.errors import RemoteException, TaskFailure

# Where a future's exception comes from; here too, where they were first defined.
from remotemap.future_errors import RemoteTraceback, failure_of, task_exception
from remotemap.tasks import Chunk, ChunkResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from remotemap.call_options import ExecutorOptions, TaskSettings

as_completed = concurrent.futures.as_completed
__all__ = ["Executor", "RemoteTraceback", "as_completed", "failure_of", "task_exception"]
T = TypeVar("T")
P = ParamSpec("P")


# -- finishing the work at interpreter exit --------------------------------------------------

_exit_lock = threading.Lock()
_exiting = False
#: The dispatchers whose thread runs.
_running: set[_Dispatcher] = set()
_last_hook: Callable[[], None] | None = None


def _finish_all() -> None:
    """At exit: refuse new work, then let every executor finish what it was given."""
    global _exiting
    with _exit_lock:
        _exiting = True
        dispatchers = list(_running)
    for dispatcher in dispatchers:
        dispatcher.stop(wait=True)


def _register_exit_hook() -> None:
    """Have :func:`_finish_all` run before threads are joined, and before any hook registered
    so far: those run last-registered first, and a backend's pool registers its own hook
    (loky's stops taking work) when it first starts, which must come after ours has run."""
    global _last_hook
    register = getattr(threading, "_register_atexit", None)
    with _exit_lock:
        if register is None:  # not CPython >= 3.9: plain atexit (dispatchers are daemons)
            if _last_hook is None:
                _last_hook = _finish_all
                atexit.register(_finish_all)
            return
        hooks = getattr(threading, "_threading_atexits", None)
        if _last_hook is not None and hooks and hooks[-1] is _last_hook:
            return  # ours is still the last one registered
        hook = functools.partial(_finish_all)
        try:
            register(hook)
        except RuntimeError:  # the interpreter is exiting already: an earlier hook runs
            return
        _last_hook = hook


def _forget_after_fork() -> None:
    """In a forked child the parents' dispatcher threads do not exist: nothing to wait for."""
    global _exit_lock
    _exit_lock = threading.Lock()
    _running.clear()


_register_exit_hook()  # so that even an executor never used refuses work at exit
os.register_at_fork(after_in_child=_forget_after_fork)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


@dataclass
class _Task:
    index: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[Any]


def _chunk(tasks: list[_Task]) -> Chunk:
    return Chunk(tasks[0].index, [t.index for t in tasks],
                 [(t.fn, t.args, t.kwargs) for t in tasks], [{}] * len(tasks))


def _take(future: concurrent.futures.Future[Any], end: float | None) -> Any:
    """``future``'s result by ``end``; cancelled if the caller stops waiting for it."""
    try:
        return future.result(None if end is None else end - time.monotonic())
    finally:
        future.cancel()
        del future  # no reference to the result stays in this frame


def _in_order(futures: list[concurrent.futures.Future[Any]],
              end: float | None) -> Iterator[Any]:
    futures.reverse()
    try:
        while futures:
            yield _take(futures.pop(), end)
    finally:
        for future in futures:  # the caller stopped early: what did not start never will
            future.cancel()


class Executor(concurrent.futures.Executor):
    """Run submitted calls on mode ``mode`` (default: the config's mode).

    ``max_workers`` bounds how many chunks are out at once (default: as many as the backend
    keeps busy); ``timeout``, ``retries``, ``backoff``, ``env`` and the mode's own ``options``
    mean what they mean for :func:`remotemap.remote_map`. An executor dropped without
    ``shutdown`` still finishes its work, then frees its workers.
    """

    @overload
    def __init__(self, mode: Mode | None = None, *, max_workers: int | None = None,
                 **options: Unpack[ExecutorOptions]) -> None: ...
    @overload
    def __init__(self, mode: ModeName, *, max_workers: int | None = None,
                 config: Config | str | os.PathLike[str] | None = None,
                 timeout: float | None = None, retries: int = 0, backoff: float = 0.5,
                 env: Mapping[str, str] | None = None, **options: Any) -> None: ...
    @overload
    def __init__(self, *, executor: concurrent.futures.Executor, max_workers: int | None = None,
                 **options: Unpack[TaskSettings]) -> None: ...
    def __init__(self, mode: str | None = None, *, max_workers: int | None = None,
                 config: Config | str | os.PathLike[str] | None = None,
                 timeout: float | None = None, retries: int = 0, backoff: float = 0.5,
                 env: Mapping[str, str] | None = None,
                 executor: concurrent.futures.Executor | None = None, **options: Any) -> None:
        stream = options.pop("stream_output", None)
        policy = make_policy("continue", timeout, retries, backoff, env, stream is None or stream)
        if executor is not None:  # the same rule as remote_map(executor=...)
            if mode is not None or config is not None or options:
                raise ValueError("give an executor or a mode with its options, not both")
            backend: Backend = executor_backend(executor, policy.options)
            self.mode = backend.name
        else:
            cfg, self.mode = run_config(config, mode)
            policy = configured_stream(policy, stream, cfg)
            backend = make_backend(self.mode, cfg, options, EXECUTOR_OPTIONS)
        self._dispatcher = _Dispatcher(backend, policy)
        self.max_workers = max_workers
        # The dispatcher thread holds the dispatcher, never this object: dropping the last
        # reference to an executor shuts it down as shutdown(wait=False) would.
        weakref.finalize(self, self._dispatcher.stop, False).atexit = False

    @property
    def max_workers(self) -> int | None:
        return self._dispatcher.max_workers

    @max_workers.setter
    def max_workers(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"max_workers must be None or a whole number >= 1, got {value!r}")
        self._dispatcher.max_workers = value

    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        return self._dispatcher.enqueue(fn, [(args, kwargs)], 1)[0]

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[T]:
        """Results of ``fn`` over the zipped ``iterables``, in order; every call is submitted
        now. ``chunksize`` calls go to a worker together (each still fails alone); waiting
        past ``timeout`` seconds from this call raises ``TimeoutError``."""
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a whole number >= 1, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        # Shortest iterable wins, as for the built-in map.
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (args, {}) for args in zip(*iterables, strict=False)]
        return _in_order(self._dispatcher.enqueue(fn, calls, chunksize), end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._dispatcher.stop(wait, cancel_futures=cancel_futures)

    def terminate_workers(self) -> None:
        """Stop now, as ``ProcessPoolExecutor.terminate_workers`` does (Python 3.14): futures
        not started are cancelled, tasks that run are stopped (their futures fail with a
        ``RemoteException`` of kind ``"cancelled"``), and the executor shuts down. A mode
        that runs tasks in this process (``serial``) cannot stop a running task: it ends it."""
        self._dispatcher.stop(True, cancel_futures=True, abort=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool | None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            # Ctrl-C or exit while waiting: stop everything now rather than finish the work.
            self.terminate_workers()
            return None
        self.shutdown(wait=True)
        return None


class _Dispatcher(Work):
    """An executor's state and its one thread: submissions in, the backend session, futures
    resolved. Its thread starts with the first submission and ends after shutdown; it runs
    the one dispatch loop (``driver.dispatch``) with the submissions as its :class:`Work`."""

    def __init__(self, backend: Backend, policy: Policy) -> None:
        self.backend = backend
        self.policy = policy
        self.max_workers: int | None = None
        self.lock = threading.Condition()
        #: Submitted, not yet handed to the backend: one list of tasks per chunk.
        self.pending: collections.deque[list[_Task]] = collections.deque()
        #: Tasks whose retry is due, not yet handed to the backend (this thread's only).
        self.retry: collections.deque[int] = collections.deque()
        self.tasks: dict[int, _Task] = {}
        self.count = 0
        self.shutdown = False
        self.abort = False
        #: Why the backend failed, if it did: then nothing more can be submitted.
        self.broken: BaseException | None = None
        self.session: Session | None = None
        self.thread: threading.Thread | None = None
        #: Set once the backend has its first chunk (or failed to start).
        self.started = threading.Event()

    def enqueue(self, fn: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
                chunksize: int) -> list[concurrent.futures.Future[Any]]:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        futures: list[concurrent.futures.Future[Any]] = []
        with self.lock:
            with _exit_lock:  # checked and recorded together, so _finish_all sees this one
                if _exiting:  # first: the exit hook shut this executor down too
                    raise RuntimeError("cannot submit to an Executor after interpreter shutdown")
                if self.broken is not None:
                    raise concurrent.futures.BrokenExecutor(
                        f"the {self.backend.name} backend of this Executor failed, so it takes "
                        f"no more work: {self.broken!r}") from self.broken
                if self.shutdown:
                    raise RuntimeError("cannot submit to an Executor that was shut down")
                starting = self.thread is None and bool(calls)
                if starting:
                    _running.add(self)
            for start in range(0, len(calls), chunksize):
                batch = [_Task(self.count + i, fn, args, kwargs, concurrent.futures.Future())
                         for i, (args, kwargs) in enumerate(calls[start:start + chunksize])]
                self.count += len(batch)
                self.pending.append(batch)
                self.tasks.update((task.index, task) for task in batch)
                futures += [task.future for task in batch]
            if starting:
                self.thread = threading.Thread(target=self.run, daemon=True,
                                               name=f"remotemap-executor-{self.backend.name}")
                self.thread.start()
            self.lock.notify()
        self.wake()
        if starting:
            # As ProcessPoolExecutor starts its processes in submit(): a caller that ends
            # right away still finds the backend started (its own exit hook set up).
            self.started.wait()
            _register_exit_hook()
        return futures

    def stop(self, wait: bool, *, cancel_futures: bool = False, abort: bool = False) -> None:
        with self.lock:
            self.shutdown = True
            self.abort = self.abort or abort
            if cancel_futures:
                while self.pending:
                    for task in self.pending.popleft():
                        task.future.cancel()
                        del self.tasks[task.index]
            self.lock.notify()
        self.wake()
        if wait and self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()

    def wake(self) -> None:
        session = self.session
        if session is not None:
            session.wake()

    def run(self) -> None:
        retries = RetrySchedule(self.policy)
        try:
            with open_streaming(self.backend, _call, self.policy) as session:
                self.session = session
                for result in dispatch(session, self, retries):
                    self._hand_over(result, retries)
                    del result  # no result stays referenced here while the loop waits
        except BaseException as exc:  # the backend itself failed: every open future fails
            error = exc
            with self.lock:  # from now on submit() refuses, rather than queue work never run
                self.broken = error
            self._fail_open(lambda task: error)
        finally:
            self.session = None
            self.started.set()
            self._fail_open(lambda task: RemoteException([TaskFailure(
                task.index, "Cancelled", "the executor stopped before the task finished",
                kind="cancelled")], [None]))
            with _exit_lock:
                _running.discard(self)

    def _hand_over(self, result: ChunkResult, retries: RetrySchedule) -> None:
        for index, value in zip(result.indices, result.values, strict=True):
            self._resolve(index).set_result(value)
        for failure in result.failures:
            final = retries.consider(failure)
            if final is not None:
                self._resolve(final.index).set_exception(task_exception(final))

    def _fail_open(self, error: Callable[[_Task], BaseException]) -> None:
        with self.lock:
            tasks, self.pending = list(self.tasks.values()), collections.deque()
            self.tasks.clear()
        for task in tasks:
            if not task.future.done():
                task.future.set_exception(error(task))

    # -- the dispatch loop's Work: what was submitted ------------------------------------------
    def again(self, indices: list[int]) -> None:
        self.retry.extend(indices)

    def take(self, room: int) -> list[Chunk] | None:
        """Retries first, then submissions, up to ``max_workers`` chunks out; None to stop."""
        with self.lock:
            if self.abort:
                return None
            if self.max_workers is not None and self.session is not None:
                room = min(room, self.max_workers - self.session.in_flight)
            chunks: list[Chunk] = []
            while self.retry and len(chunks) < room:
                chunks.append(_chunk([self.tasks[self.retry.popleft()]]))
            while self.pending and len(chunks) < room:
                batch = self.pending.popleft()
                kept = [task for task in batch if task.future.set_running_or_notify_cancel()]
                for task in batch:
                    if task.future.cancelled():
                        del self.tasks[task.index]
                if kept:
                    chunks.append(_chunk(kept))
        if not self.backend.isolates_crashes:
            self.started.set()  # tasks run in this process: nothing to start first
        return chunks

    def sent(self) -> None:
        self.started.set()

    def ended(self) -> bool:
        with self.lock:
            return self.shutdown and not self.pending and not self.retry

    def idle(self, timeout: float | None) -> None:
        """Wait for a submission, ``stop``, or ``timeout`` (the next retry)."""
        with self.lock:
            if not self.pending and not self.abort:
                self.lock.wait(timeout)

    def _resolve(self, index: int) -> concurrent.futures.Future[Any]:
        with self.lock:
            return self.tasks.pop(index).future
