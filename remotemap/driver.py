"""Driving a backend session through one run: retries, fail-fast, progress, stored outcomes.

Everything here is the same for every backend: the backend only runs chunks (see
``remotemap.session``); what to submit, what to retry and when to stop is decided here.

:func:`dispatch` is the one dispatch loop. ``remote_map``/``remote_imap`` (through
:func:`drive`), the :class:`~remotemap.Executor` and the ``cluster`` workflow runner all drive
their sessions with it; they differ only in where their chunks come from, which is a
:class:`Work`: a fixed list of chunks (:func:`drive`), submissions arriving from other threads
(the executor), or the steps of a graph that become ready as others end
(``workflow.on_cluster``). What comes back is theirs to handle: the loop yields each
:class:`ChunkResult` as it arrives, and the caller decides which failures go to
:meth:`RetrySchedule.consider`. One turn of the loop:

1. the tasks whose retry is due go back to the work (:meth:`Work.again`);
2. the session is filled up to its ``capacity`` (:meth:`Work.take`);
3. with something out, ``session.wait`` until a result comes, the next retry is due, or
   ``session.wake()`` is called; with nothing out, the work waits for more
   (:meth:`Work.idle`), or the loop ends when no more can come.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remotemap.capture import Printer, write_line
from remotemap.errors import TaskFailure
from remotemap.execution import fill_source_lines
from remotemap.progress import Progress
from remotemap.runs import RunStore
from remotemap.session import Backend, Session, TaskOptions
from remotemap.tasks import (
    Chunk,
    ChunkResult,
    ChunkSizer,
    check_env,
    learned_times,
    make_chunks,
    remember_times,
)


@dataclass(frozen=True)
class Policy:
    """How a run treats failures."""

    #: "continue": run every task, then report; "stop": stop at the first final failure.
    on_error: str = "continue"
    #: Further attempts for a failed task (an exception, crash, timeout...).
    retries: int = 0
    #: Seconds before the first retry of a task; doubled for each further one.
    backoff: float = 0.5
    options: TaskOptions = field(default_factory=TaskOptions)
    #: Show what tasks print while the run goes (prefixed ``[task N] ``), besides keeping it.
    stream_output: bool = True


_ON_ERROR = ("continue", "stop")


def make_policy(on_error: str, timeout: float | None, retries: int, backoff: float,
                env: Mapping[str, str] | None, stream_output: bool = True) -> Policy:
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, _ON_ERROR))}, "
                         f"got {on_error!r}")
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
    env = dict(env or {})
    bad = [k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"env must map names to strings; env[{bad[0]!r}] is "
                        f"{type(env[bad[0]]).__name__}")
    check_env(env)
    if not isinstance(stream_output, bool):
        raise TypeError(f"stream_output must be True or False, got {stream_output!r}")
    return Policy(on_error, retries, float(backoff), TaskOptions(timeout, env, on_error == "stop"),
                  stream_output)


def output_shower(policy: Policy, session: Session,
                  write: Callable[[str, bool], None]) -> Callable[[ChunkResult], None] | None:
    """What shows a result's task output when it arrives, or None: output not streamed, or
    the session shows it itself as it is printed (``serial``)."""
    if not policy.stream_output:
        return None
    printer = Printer(write)
    return None if session.echo_output(printer) else printer.show


@dataclass
class Outcome:
    """What a run ended with."""

    results: list[Any]
    failures: list[TaskFailure]
    #: Tasks not run because the run stopped early.
    not_run: int = 0


def localize(failure: TaskFailure) -> TaskFailure:
    """``failure`` with the source lines its traceback lacks, from this process's files."""
    text = fill_source_lines(failure.traceback) if failure.traceback else ""
    return failure if text == failure.traceback else dataclasses.replace(failure, traceback=text)


def open_streaming(backend: Backend, function: Callable[..., Any], policy: Policy,
                   write: Callable[[str, bool], None] = write_line) -> Session:
    """``backend.open(function, policy.options)``, whose results' task output is shown through
    ``write`` as they arrive when ``policy.stream_output`` (for loops without a bar)."""
    session = backend.open(function, policy.options)
    show = output_shower(policy, session, write)
    return session if show is None else _Showing(session, show)


class _Showing(Session):
    """A session whose ``wait`` shows what the tasks of each result printed."""

    def __init__(self, session: Session, show: Callable[[ChunkResult], None]) -> None:
        self.session, self.show = session, show
        self.capacity = session.capacity

    def submit(self, chunk: Chunk) -> None:
        self.session.submit(chunk)

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        results = self.session.wait(timeout)
        for result in results:
            self.show(result)
        return results

    @property
    def in_flight(self) -> int:
        return self.session.in_flight

    def wake(self) -> None:
        self.session.wake()

    def close(self) -> None:
        self.session.close()


class RetrySchedule:
    """Failed tasks waiting for their next attempt, earliest first (public: every loop that
    drives a session with a :class:`Policy` schedules its retries with it)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.earlier: dict[int, list[TaskFailure]] = {}
        self._due: list[tuple[float, int]] = []

    def consider(self, failure: TaskFailure) -> TaskFailure | None:
        """Schedule another attempt, or return the final failure (with its history)."""
        failure = localize(failure)
        history = self.earlier.setdefault(failure.index, [])
        if len(history) < self.policy.retries and failure.kind != "pickling":
            history.append(failure)
            delay = self.policy.backoff * 2 ** (len(history) - 1)
            heapq.heappush(self._due, (time.monotonic() + delay, failure.index))
            return None
        if not history:
            return failure
        return dataclasses.replace(failure, attempts=len(history) + 1, previous=tuple(history))

    def due(self) -> list[int]:
        now = time.monotonic()
        ready = []
        while self._due and self._due[0][0] <= now:
            ready.append(heapq.heappop(self._due)[1])
        return ready

    def due_now(self) -> bool:
        return bool(self._due) and self._due[0][0] <= time.monotonic()

    def next_in(self) -> float | None:
        return max(0.0, self._due[0][0] - time.monotonic()) if self._due else None

    def __bool__(self) -> bool:
        return bool(self._due)


class Work(ABC):
    """Where a :func:`dispatch` loop's chunks come from."""

    @abstractmethod
    def again(self, indices: list[int]) -> None:
        """Tasks whose retry is due: send them again (before new work, as a rule)."""

    @abstractmethod
    def take(self, room: int) -> list[Chunk] | None:
        """At most ``room`` chunks to submit now (maybe none); None to stop the loop now,
        whatever is still out."""

    @abstractmethod
    def ended(self) -> bool:
        """No more work will come: the loop ends once nothing is out or waiting to retry."""

    def idle(self, timeout: float | None) -> None:
        """Nothing is out and nothing could be sent: wait for more work, or ``timeout``
        seconds (the next retry is due then). Work that never grows has only retries to wait
        for."""
        time.sleep(timeout or 0)

    def submitted(self, chunk_id: int) -> None:  # noqa: B027 - most work has nothing to do
        """Chunk ``chunk_id`` was just handed to the session (packed and sent, for a local
        one)."""

    def sent(self) -> None:  # noqa: B027 - most work has nothing to do here
        """The chunks just taken were submitted; the loop waits next."""


def _submit(session: Session, chunks: list[Chunk], sent: dict[int, list[float]],
            work: Work) -> None:
    # The chunks (functions and arguments) stay in this frame only, not held while waiting.
    for chunk in chunks:
        sent[chunk.id] = [time.time(), len(chunk)]
        session.submit(chunk)
        work.submitted(chunk.id)


def _stamp(result: ChunkResult, sent: dict[int, list[float]]) -> ChunkResult:
    """``result`` with a time for each task and each failure: the worker's own, else (a crash,
    a task that never started) from when its chunk was sent to now. ``sent`` maps the chunks
    out to [when sent, tasks not back yet]."""
    entry = sent.get(result.chunk_id)
    if entry is not None:
        entry[1] -= len(result.indices) + len(result.failures)
        if entry[1] <= 0:
            del sent[result.chunk_id]
    if result.failures:
        fallback = (entry[0] if entry else time.time(), time.time())
        timings = result.timings
        result.failures = [dataclasses.replace(
            f, timing=timings.setdefault(f.index, f.timing or fallback),
            worker=f.worker or result.worker) for f in result.failures]
    return result


def dispatch(session: Session, work: Work, retries: RetrySchedule) -> Iterator[ChunkResult]:
    """Drive ``session`` with ``work`` until the work has ended and every result came back
    (see the module docstring). Closing the generator stops sending; the session is the
    caller's to close."""
    sent: dict[int, list[float]] = {}
    while True:
        due = retries.due()
        if due:
            work.again(due)
        chunks = work.take(max(session.capacity - session.in_flight, 0))
        if chunks is None:
            return
        _submit(session, chunks, sent, work)
        del chunks
        work.sent()
        if session.in_flight:
            # map, not a loop variable that would keep the last result alive while waiting
            yield from map(_stamp, session.wait(retries.next_in()), itertools.repeat(sent))
        elif retries or not work.ended():
            work.idle(retries.next_in())
        else:
            return


class _Tasks(Work):
    """A fixed list of tasks in chunks; retried tasks go out first, one chunk per due batch.
    The chunks are cut as they go out, their size from ``sizer`` (see ChunkSizer)."""

    def __init__(self, largs: list[tuple[Any, ...]], lkwargs: list[dict[str, Any]],
                 sizer: ChunkSizer, todo: Sequence[int]) -> None:
        self.largs, self.lkwargs = largs, lkwargs
        self.todo, self.cut, self.sizer = todo, 0, sizer  # todo[:cut] went out
        self.retry: list[Chunk] = []
        self.first_id = 0
        self.next_id = len(largs)  # retried tasks go out in chunks numbered after the first

    def again(self, indices: list[int]) -> None:
        self.retry.append(Chunk(self.next_id, indices, [self.largs[i] for i in indices],
                                [self.lkwargs[i] for i in indices]))
        self.next_id += 1

    def take(self, room: int) -> list[Chunk]:
        chunks, self.retry = self.retry[:room], self.retry[room:]
        while len(chunks) < room and self.cut < len(self.todo):
            size = self.sizer.size_for(len(self.todo) - self.cut)
            part = self.todo[self.cut : self.cut + size]
            self.cut += len(part)
            (chunk,) = make_chunks(self.largs, self.lkwargs, len(part), indices=part)
            chunk.id, self.first_id = self.first_id, self.first_id + 1
            chunks.append(chunk)
        return chunks

    def submitted(self, chunk_id: int) -> None:
        self.sizer.sent(chunk_id)

    def ended(self) -> bool:
        return self.cut >= len(self.todo) and not self.retry


@dataclass
class Update:
    """What one wait brought: values of tasks that succeeded, failures that are final."""

    indices: Sequence[int]
    values: list[Any]
    failures: list[TaskFailure]
    #: ``indices`` are consecutive and ascending (ChunkResult.consecutive).
    consecutive: bool = False


def drive(
    backend: Backend,
    function: Callable[..., Any],
    largs: list[tuple[Any, ...]],
    lkwargs: list[dict[str, Any]],
    policy: Policy,
    *,
    progress: bool | None = None,
    store: RunStore | None = None,
) -> Iterator[Update]:
    """Run every task (those ``store`` has no success for), yielding results as they come.

    Closing the generator early stops the backend's workers. With ``on_error="stop"`` it ends
    after the first final failure.
    """
    n_tasks = len(largs)
    todo: Sequence[int] = range(n_tasks)  # a range: chunks are cut as slices, not looked up
    if store is not None:  # a resumed run: what succeeded before is kept, not run again
        stored = store.load()
        if stored.values:
            yield Update(list(stored.values), list(stored.values.values()), [])
        todo = [i for i in todo if i not in stored.values]
    # A timeout is per task: give each task its own chunk so one slow task cannot take others'
    # time, and a timed-out chunk kills only the task that overran.
    timeout = policy.options.timeout is not None
    sizer = ChunkSizer(1 if timeout else backend.chunksize(len(todo)),
                       spread=0 if timeout else backend.chunk_spread(),
                       prior=learned_times(function, backend.name))
    retries = RetrySchedule(policy)
    # The bar first: it shows 0/N while the session opens (hosts connect, workers start), and
    # its summary line comes after the session has closed.
    with Progress(n_tasks, progress, backend.name) as bar, \
            backend.open(function, policy.options) as session:
        bar.restored(n_tasks - len(todo))
        if bar.shown:  # counting costs the workers a little: only for a bar someone sees
            bar.follow(session.count_running())
        session.show_status = bar.set_status
        show = output_shower(policy, session, lambda text, err: bar.write(text, stderr=err))
        for result in dispatch(session, _Tasks(largs, lkwargs, sizer, todo), retries):
            sizer.returned(result)
            if show is not None:
                show(result)
            if store is not None:
                store.record(result)
            finals = [f for f in map(retries.consider, result.failures) if f is not None]
            bar.update(len(result.indices) + len(finals), failed=len(finals),
                       retried=len(result.failures) - len(finals))
            yield Update(result.indices, result.values, finals, result.consecutive)
            if finals and policy.on_error == "stop":
                return
        remember_times(function, backend.name, sizer.learned())


def collect(updates: Iterator[Update], n_tasks: int) -> Outcome:
    """Every result in input order, and the final failures by index."""
    results: list[Any] = [None] * n_tasks
    failures: list[TaskFailure] = []
    done = 0
    for update in updates:
        indices = update.indices
        span = range(indices[0], indices[0] + len(indices)) if indices else range(0)
        if len(update.values) == len(span) > 1 and (
                update.consecutive or indices == span or indices == list(span)):
            # A whole chunk that succeeded, its indices consecutive: one slice, in C (a loop
            # here cost ~0.1 us a task). The comparison too runs in C, where still needed.
            results[span.start:span.stop] = update.values
        else:
            for index, value in zip(indices, update.values, strict=True):
                results[index] = value
        failures += update.failures
        done += len(update.indices) + len(update.failures)
    return Outcome(results, sorted(failures, key=lambda f: f.index), n_tasks - done)
