"""``serial``: every task in turn, in this process. The reference for every other backend."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.capture import Printer, merge_outputs
from remotemap.errors import TaskTimeout
from remotemap.execution import run_chunk
from remotemap.interrupts import SigintWatch
from remotemap.leftovers import Stdio
from remotemap.tasks import Chunk, ChunkResult

if TYPE_CHECKING:
    pass


class SerialBackend(Backend):
    name = "serial"
    isolates_crashes: ClassVar[bool] = False

    def open(self, function: Callable[..., Any], options: TaskOptions) -> Session:
        in_main_thread = threading.current_thread() is threading.main_thread()
        if options.timeout is not None and not in_main_thread:
            raise ValueError("serial mode enforces timeouts with SIGALRM, which only works in "
                             "the main thread; use mode='local' for timeouts elsewhere")
        return _SerialSession(function, options)

class _SerialSession(Session):
    """Runs each chunk the moment it is submitted, in the submitting thread.

    A task's ``KeyboardInterrupt`` fails that task; a real Ctrl-C stops the run (told apart by
    a :class:`SigintWatch`). Stdout and stderr closed by a task are put back after its chunk.
    """

    capacity = 1

    def __init__(self, function: Callable[..., Any], options: TaskOptions) -> None:
        self.function = function
        self.options = options
        self.ready: list[ChunkResult] = []
        self.sigint = SigintWatch()
        self.stdio = Stdio()
        self.echo: Printer | None = None

    def echo_output(self, printer: Printer) -> bool:
        # The tasks run here, in this thread: their lines can be shown as they are printed.
        self.echo = printer
        return True

    def submit(self, chunk: Chunk) -> None:
        self.sigint.reset()
        try:
            self._run(chunk)
        finally:
            self.stdio.repair()

    def _run(self, chunk: Chunk) -> None:
        interrupted = self.sigint.interrupted
        with _environment(self.options.env):
            if self.options.timeout is None:
                self.ready.append(run_chunk(self.function, chunk, interrupted, echo=self.echo))
                return
            indices: list[int] = []  # the result's, gathered here
            result = ChunkResult(chunk.id, indices)
            for one in (Chunk(chunk.id, [i], [a], [k]) for i, a, k in
                        zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True)):
                with _alarm(self.options.timeout):
                    part = run_chunk(self.function, one, interrupted, echo=self.echo)
                indices += part.indices
                result.values += part.values
                result.failures += [_as_timeout(f) for f in part.failures]
                result.timings.update(part.task_times())
                result.worker = part.worker
                merge_outputs(result, part)
            self.ready.append(result)

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        ready, self.ready = self.ready, []
        return ready

    @property
    def in_flight(self) -> int:
        return len(self.ready)

    def close(self) -> None:
        self.ready = []
        self.sigint.close()
        self.stdio.close()


def _as_timeout(failure: Any) -> Any:
    if failure.exception_type != TaskTimeout.__qualname__:
        return failure
    import dataclasses

    return dataclasses.replace(failure, kind="timeout")


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` for the duration of a task, then put back what was there."""
    if not env:
        yield
        return
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeout(f"the task ran longer than its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
