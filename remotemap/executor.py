"""``Executor``: concurrent.futures' interface on any remotemap mode.

``submit`` returns a :class:`concurrent.futures.Future` at once; ``result()`` blocks until the
task is done and re-raises its failure as a :class:`RemoteException` holding that one
:class:`TaskFailure`. One dispatcher thread owns the backend session: it moves submissions
into the session (at most ``max_workers`` at a time, changeable for later submissions),
collects results, retries failed attempts, and resolves the futures.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from remotemap.api import make_backend, make_policy
from remotemap.backends.base import Session
from remotemap.config import Config, load_config
from remotemap.driver import _Retries
from remotemap.errors import RemoteException, TaskFailure
from remotemap.tasks import Chunk

as_completed = concurrent.futures.as_completed


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


@dataclass
class _Task:
    index: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[Any]

    def chunk(self) -> Chunk:
        return Chunk(self.index, [self.index], [(self.fn, self.args, self.kwargs)], [{}])


class Executor(concurrent.futures.Executor):
    """Run submitted calls on mode ``mode`` (default: the config's mode).

    ``max_workers`` bounds how many tasks are out at once (default: as many as the backend
    keeps busy); ``timeout``, ``retries``, ``backoff``, ``env`` and the mode's own ``options``
    mean what they mean for :func:`remotemap.remote_map`.
    """

    def __init__(self, mode: str | None = None, *, max_workers: int | None = None,
                 config: Config | str | os.PathLike[str] | None = None,
                 timeout: float | None = None, retries: int = 0, backoff: float = 0.5,
                 env: Mapping[str, str] | None = None, **options: Any) -> None:
        cfg = config if isinstance(config, Config) else load_config(config)
        self.mode = mode if mode is not None else str(cfg.get("remotemap.mode"))
        self._policy = make_policy("continue", timeout, retries, backoff, env)
        self._backend = make_backend(self.mode, cfg, options)
        self.max_workers = max_workers
        self._lock = threading.Condition()
        self._pending: collections.deque[_Task] = collections.deque()
        self._tasks: dict[int, _Task] = {}
        self._count = 0
        self._shutdown = False
        self._abort = False
        self._session: Session | None = None
        self._thread: threading.Thread | None = None

    @property
    def max_workers(self) -> int | None:
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"max_workers must be None or a whole number >= 1, got {value!r}")
        self._max_workers = value

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an Executor that was shut down")
            task = _Task(self._count, fn, args, kwargs, future)
            self._count += 1
            self._pending.append(task)
            self._tasks[task.index] = task
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, daemon=True,
                                                name=f"remotemap-executor-{self.mode}")
                self._thread.start()
            self._lock.notify()
        if self._session is not None:
            self._session.wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
            self._lock.notify()
        if self._session is not None:
            self._session.wake()
        if wait and self._thread is not None:
            self._thread.join()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool | None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            # Ctrl-C or exit while waiting: stop everything now rather than finish the work.
            self._abort = True
            self.shutdown(wait=True, cancel_futures=True)
            return None
        self.shutdown(wait=True)
        return None

    # -- the dispatcher thread --------------------------------------------------------------

    def _dispatch(self) -> None:
        retries = _Retries(self._policy)
        try:
            with self._backend.open(_call, self._policy.options) as session:
                self._session = session
                while self._step(session, retries):
                    pass
        except BaseException as exc:  # the backend itself failed: every open future fails
            error = exc
            self._fail_open(lambda task: error)
        finally:
            self._session = None
            self._fail_open(lambda task: RemoteException([TaskFailure(
                task.index, "Cancelled", "the executor stopped before the task finished",
                kind="cancelled")], [None]))

    def _fail_open(self, error: Callable[[_Task], BaseException]) -> None:
        with self._lock:
            tasks, self._pending = list(self._tasks.values()), collections.deque()
            self._tasks.clear()
        for task in tasks:
            if not task.future.done():
                task.future.set_exception(error(task))

    def _step(self, session: Session, retries: _Retries) -> bool:
        """Submit what may go out, then take in what came back; False when all is done."""
        with self._lock:
            while not self._pending and session.in_flight == 0 and not self._shutdown:
                if retries and retries.due_now():
                    break
                self._lock.wait(retries.next_in() if retries else None)
            if self._abort or (self._shutdown and not self._pending
                               and session.in_flight == 0 and not retries):
                return False
            limit = min(session.capacity, self._max_workers or session.capacity)
            batch: list[_Task] = []
            while self._pending and session.in_flight + len(batch) < limit:
                task = self._pending.popleft()
                if task.future.set_running_or_notify_cancel():
                    batch.append(task)
                else:
                    del self._tasks[task.index]
        for task in batch:
            session.submit(task.chunk())
        for index in retries.due():
            session.submit(self._tasks[index].chunk())
        for result in session.wait(retries.next_in() if retries else None):
            for index, value in zip(result.indices, result.values, strict=True):
                self._resolve(index).set_result(value)
            for failure in result.failures:
                final = retries.consider(failure)
                if final is not None:
                    self._fail(final)
        return True

    def _resolve(self, index: int) -> concurrent.futures.Future[Any]:
        with self._lock:
            return self._tasks.pop(index).future

    def _fail(self, failure: TaskFailure) -> None:
        self._resolve(failure.index).set_exception(RemoteException([failure], [None]))
