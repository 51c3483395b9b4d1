"""What a future of :class:`remotemap.Executor` raises for a failed task.

The task's own exception, rebuilt here, with a :class:`RemoteTraceback` chained as
``__cause__`` (the traceback as the worker saw it, and the whole :class:`TaskFailure`); a
:class:`RemoteException` holding the one failure where the exception cannot be rebuilt.
``remotemap.executor`` re-exports these names.
"""

from __future__ import annotations

from remotemap.errors import RemoteException, RemotemapError, TaskFailure


class RemoteTraceback(RemotemapError):
    """The ``__cause__`` of an exception that ``Future.result()`` re-raises: its text is the
    traceback as the worker saw it; ``failure`` is the task's whole :class:`TaskFailure`."""

    def __init__(self, failure: TaskFailure) -> None:
        super().__init__(failure)
        self.failure = failure

    def __str__(self) -> str:
        where = f"task {self.failure.index} on {self.failure.host}"
        return f'{where}, remote traceback:\n"""\n{self.failure.traceback.rstrip()}\n"""'


def failure_of(exc: BaseException) -> TaskFailure | None:
    """The :class:`TaskFailure` behind an exception a future of :class:`Executor` raised."""
    if isinstance(exc, RemoteException) and exc.failures:
        return exc.failures[0]
    cause = exc.__cause__
    return cause.failure if isinstance(cause, RemoteTraceback) else None


def task_exception(failure: TaskFailure) -> BaseException:
    """What ``result()`` raises for ``failure``: the task's own exception, rebuilt, with the
    remote traceback as cause; or a :class:`RemoteException` where it cannot be rebuilt."""
    exc = failure.exception()
    if exc is None:
        return RemoteException([failure], [None])
    exc.__cause__ = RemoteTraceback(failure)
    return exc
