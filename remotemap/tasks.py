"""Tasks as remote_map sees them: argument lists, chunks of tasks, and what a chunk gives back.

A chunk keeps its tasks as parallel lists rather than one object per task: on runs of many
tiny tasks, building and pickling per-task objects would cost more than the tasks themselves.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import countOf
from typing import Any

from remotemap.errors import TaskFailure


@dataclass
class Chunk:
    """Consecutive tasks that one worker runs in turn."""

    id: int
    #: The tasks' indices: a ``range`` where ``make_chunks`` cut consecutive ones (no list of
    #: thousands of ints made and freed again per chunk), else a list.
    indices: Sequence[int]
    #: Each task's positional arguments as a tuple; its only argument itself when ``singles``.
    largs: list[Any]
    lkwargs: list[dict[str, Any]]
    #: ``indices`` are consecutive, as ``make_chunks`` cut them from a slice: known without
    #: comparing them (``local`` then sends them as a span).
    consecutive: bool = False
    #: ``largs`` holds each task's only positional argument itself, not a tuple of it: a
    #: ``local`` worker's chunk, packed so (``buffers.BufferSpill.pack``, ``single_arguments``).
    singles: bool = False

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class ChunkResult:
    """What came back for one chunk: values of the tasks that succeeded, and the failures.

    ``indices[k]`` is the task whose return value is ``values[k]``; a task is in exactly one of
    ``indices`` or ``failures``. While ``run_chunk`` fills it, only ``values`` grows per task
    (an append per task costs a tiny task ~30 ns): ``indices`` is set at the end, so what
    counts the tasks done meanwhile reads ``len(values) + len(failures)``.
    """

    chunk_id: int
    #: A list, or the chunk's own ``range`` when every task of it succeeded (a read-only
    #: sequence either way: whoever gathers indices builds a list of its own).
    indices: Sequence[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    failures: list[TaskFailure] = field(default_factory=list)
    #: What each task printed (stdout and stderr, as written), by index; tasks that printed
    #: nothing are absent.
    outputs: dict[int, str] = field(default_factory=dict)
    #: Where in ``outputs[i]`` the task wrote on stderr: (start, end) offsets, in order; tasks
    #: that wrote nothing on stderr are absent (``capture.pieces`` splits the text back).
    stderr_spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    #: When each task ran, by index: (start, end) in seconds since the epoch on the host that
    #: ran it. Read them with :meth:`task_times`: the tasks that succeeded in ``run_chunk``
    #: are kept in ``ends``/``starts`` instead, and only the others here.
    timings: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: Who ran the chunk: ``host:pid`` of the worker process ("" where nothing recorded it).
    worker: str = ""
    #: ``run_chunk``'s compact record: after ``marks[j]`` of ``indices`` were done, the clock
    #: read ``ends[j]``; the tasks done since the read before (or since ``starts[d]``, where
    #: a span starts after ``d`` tasks) share that span evenly. The clock is read after each
    #: task, or after each block of up to 1,024 where tasks take under 10 us (``run_block``):
    #: a clock read may cost a few hundred ns, a tuple per task more than a tiny task.
    ends: array[float] = field(default_factory=lambda: array("d"))
    marks: array[int] = field(default_factory=lambda: array("q"))
    starts: dict[int, float] = field(default_factory=dict)
    #: ``indices`` are known consecutive and ascending (they travelled as a span): the caller
    #: puts the values in place as one slice, without comparing them.
    consecutive: bool = False

    def task_times(self) -> dict[int, tuple[float, float]]:
        """Each task's (start, end) by index, of those with a recorded time."""
        times: dict[int, tuple[float, float]] = {}
        done, last = 0, 0.0
        # getattr: a result stored by a version without these fields has none of them
        ends, marks = getattr(self, "ends", ()), getattr(self, "marks", ())
        starts: dict[int, float] = getattr(self, "starts", {})
        for end, mark in zip(ends, marks, strict=False):
            start = starts.get(done, last)
            share = (end - start) / max(mark - done, 1)
            for k in range(done, min(mark, len(self.indices))):
                times[self.indices[k]] = (start + (k - done) * share,
                                          start + (k - done + 1) * share)
            done, last = mark, end
        times.update(getattr(self, "timings", {}))
        return times

    def spell_out_times(self) -> None:
        """Move the compact record into ``timings``, before ``indices`` loses or gains one."""
        if getattr(self, "ends", ()):
            self.timings = self.task_times()
            self.ends, self.marks, self.starts = array("d"), array("q"), {}


def normalize_arguments(
    largs: Sequence[Sequence[Any]] | None, lkwargs: Sequence[Mapping[str, Any]] | None
) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """pyhrf's argument rules, checked: two lists of equal length, one entry per call.

    ``largs=None`` means no positional arguments for each call, ``lkwargs=None`` no keyword
    arguments; both None means a single call with no arguments.
    """
    if largs is not None:
        _check_list("largs", largs)
    if lkwargs is not None:
        _check_list("lkwargs", lkwargs)
    if largs is None and lkwargs is None:
        return [()], [{}]
    if largs is None:
        assert lkwargs is not None
        largs = [()] * len(lkwargs)
    if lkwargs is None:  # nothing to check: the keywords are ours (~0.05 us a task saved)
        return _args_list(largs), [{}] * len(largs)
    if len(largs) != len(lkwargs):
        raise ValueError(
            f"largs and lkwargs must have the same length: len(largs) == {len(largs)}, "
            f"len(lkwargs) == {len(lkwargs)}"
        )
    # The common case (tuples and plain dicts) is checked with exact type tests, in C (a set of
    # the types): on runs of many tiny tasks, a Python-level test per task would cost more
    # than the tasks.
    args_out = _args_list(largs)
    kwargs_out: list[dict[str, Any]]
    if _all_of(lkwargs, dict):
        kwargs_out = list(lkwargs)  # type: ignore[arg-type]  # checked just above
    else:
        kwargs_out = [_as_kwargs(i, kwargs) for i, kwargs in enumerate(lkwargs)]
    if not any(kwargs_out):  # no keywords at all: nothing to check, task by task
        return args_out, kwargs_out
    for i, kwargs in enumerate(kwargs_out):
        if kwargs and not all(type(key) is str for key in kwargs):
            bad = next(key for key in kwargs if not isinstance(key, str))
            raise TypeError(f"lkwargs[{i}] has a keyword that is not a string: {bad!r}")
    return args_out, kwargs_out


def _args_list(largs: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    if _all_of(largs, tuple):
        return list(largs)  # type: ignore[arg-type]  # checked just above
    return [_as_args(i, args) for i, args in enumerate(largs)]


def _all_of(items: Sequence[Any], kind: type) -> bool:
    """Whether every item is exactly of type ``kind``: counted in C (~0.6x a set of the types)."""
    return countOf(map(type, items), kind) == len(items)


def _as_args(i: int, args: object) -> tuple[Any, ...]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise TypeError(
            f"largs[{i}] must be a tuple or list of positional arguments, "
            f"got {type(args).__name__}: {args!r:.80}"
        )
    return tuple(args)


def _as_kwargs(i: int, kwargs: object) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"lkwargs[{i}] must be a dict of keyword arguments, "
            f"got {type(kwargs).__name__}: {kwargs!r:.80}"
        )
    return dict(kwargs)


def _check_list(name: str, value: object) -> None:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list (one entry per call), got {type(value).__name__}")


def make_chunks(
    largs: list[tuple[Any, ...]],
    lkwargs: list[dict[str, Any]],
    chunksize: int,
    indices: Sequence[int] | None = None,
) -> Iterator[Chunk]:
    """Cut the tasks (all of them, or only ``indices``) into chunks of ``chunksize``."""
    todo = range(len(largs)) if indices is None else indices
    size = max(1, chunksize)
    for chunk_id, start in enumerate(range(0, len(todo), size)):
        # Consecutive indices (every first attempt): the arguments are a slice, not a lookup
        # per task, and the indices a range. The comparison runs in C.
        part: Sequence[int] = todo[start : start + size]
        if not (isinstance(part, range) and part.step == 1):
            part = list(part)
            span = range(part[0], part[0] + len(part))
            if part == list(span):
                part = span
        if isinstance(part, range):
            yield Chunk(chunk_id, part, largs[part.start : part.stop],
                        lkwargs[part.start : part.stop], consecutive=True)
        else:
            yield Chunk(chunk_id, part, [largs[i] for i in part], [lkwargs[i] for i in part])


def auto_chunksize(n_tasks: int, n_workers: int) -> int:
    """The rule of ``multiprocessing.Pool.map``: about four chunks per worker.

    Four chunks per worker keeps the per-task cost of many tiny tasks near a plain pool's while
    leaving enough chunks for a slow one to be balanced by the others.
    """
    if n_tasks <= 0:
        return 1
    chunks_wanted = 4 * max(1, n_workers)
    return max(1, -(-n_tasks // chunks_wanted))


class ChunkSizer:
    """How many tasks the next chunk gets: ``size``, grown (when ``spread``, the number of
    workers, is given) once results show tasks so short that a chunk's round trip to a worker
    costs more than running its tasks.

    A pool of local workers answers a chunk 1-3 ms after it was sent, however short its tasks
    (the pipes, a worker waking up, pickling): 10,000 tasks of 0.3 us in 8 chunks spent most
    of their time in those trips. Once a result came back, the chunks still to cut are made
    big enough to take about one round trip to run: splitting them further would cost more
    round trips than it could balance. Tasks that take longer than a round trip keep ``size``.

    The round trip is taken as twice the way out: from the chunk handed to the session (after
    its arguments were packed) to its first task's start, the shortest seen (a chunk that
    waited behind another at its worker looks longer). Not the time until the caller read the
    result: a caller busy packing large arguments reads late, and that lag is not a cost per
    chunk that bigger chunks would save. So growth is only for sessions whose workers read
    the caller's clock (``local``). The time per task is the longest seen (the safe side for
    balance).

    ``prior``: the round trip and time per task an earlier call of the same function measured
    (:func:`learned_times`), so a call made again and again (a loop over subjects, a
    benchmark) cuts its first chunks to size instead of learning anew, as dask's scheduler
    keeps each task prefix's duration across computations. The first result of this call
    replaces it.
    """

    def __init__(self, size: int, spread: int = 0,
                 prior: tuple[float, float] | None = None) -> None:
        self.base = self.size = max(1, size)
        self.grow = spread > 0
        self.spread = max(1, spread)
        self._sent: dict[int, float] = {}
        self._trip = float("inf")
        self._per_task = 0.0
        self._measured = False  # a result of this call came back: the prior is dropped
        self._share: int | None = None  # a grown chunk's most tasks, set at its first cut
        if prior is not None and self.grow:  # an earlier call's round trip and time per task
            self._trip, self._per_task = prior
            self._resize()

    def size_for(self, left: int) -> int:
        """The next chunk's size, ``left`` tasks being still to cut. A grown chunk still
        leaves a share of those for each of the ``spread`` workers: tasks that turn slow later
        in the list (the first ones were cached, say) are not all given to one worker."""
        if self.size <= self.base:
            return self.size
        if self._share is None:  # equal shares of what is left when the size grew
            self._share = -(-left // self.spread)
        return max(self.base, min(self.size, self._share))

    def sent(self, chunk_id: int) -> None:
        if self.grow:
            self._sent[chunk_id] = time.time()

    def returned(self, result: ChunkResult) -> None:
        """Learn from ``result`` (of a chunk :meth:`sent` saw) how long a task and a trip take."""
        sent = self._sent.pop(result.chunk_id, None)
        ends, starts = result.ends, result.starts
        if sent is None or not ends or 0 not in starts or not result.indices:
            return  # not ours, or no times from the worker (a lost chunk)
        if not self._measured:  # this call's own times replace what an earlier call saw
            self._trip, self._per_task, self._measured = float("inf"), 0.0, True
        run = max(ends[-1] - starts[0], 0.0)
        way_out = starts[0] - sent  # the worker's clock is the caller's (see above)
        if way_out > 0:
            self._trip = min(self._trip, 2 * way_out)
        self._per_task = max(self._per_task, run / (len(result.indices) + len(result.failures)))
        self._resize()

    def learned(self) -> tuple[float, float] | None:
        """This call's shortest round trip and longest time per task (None before a result
        came back): where the next call of the same function starts from."""
        return (self._trip, self._per_task) if self._measured else None

    def _resize(self) -> None:
        if 0 < self._trip < float("inf") and self._per_task > 0:
            size = max(self.base, min(int(self._trip / self._per_task), 1 << 30))
            if size != self.size:
                self.size, self._share = size, None


#: What each function's last call measured (``ChunkSizer.learned``), by backend name. Weak
#: keys: an entry goes with its function; a callable that takes no weak reference (an instance
#: of a class with ``__slots__``) is not remembered.
_LEARNED: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, float]]] = \
    weakref.WeakKeyDictionary()


def single_arguments(chunk: Chunk) -> list[Any] | None:
    """Each task's only positional argument, when every task has exactly one and none has
    keywords (the common ``largs=[(x,) for x in ...]``); else None. Sent as a plain list they
    pickle in half the time and load in a fifth (no tuple each), and the worker calls ``f(x)``
    rather than ``f(*args)``. Checked and flattened in one pass, ~20 ns a task (counting the
    lengths in C and then flattening took 100). The arguments are tuples already
    (:func:`normalize_arguments`): unpacking one reads it and nothing else."""
    if any(chunk.lkwargs):
        return None
    try:
        return [argument for (argument,) in chunk.largs]
    except ValueError:  # a task with no argument, or several
        return None


def learned_times(function: Any, backend: str) -> tuple[float, float] | None:
    """The round trip and time per task the last call of ``function`` on ``backend`` saw."""
    try:
        return _LEARNED.get(function, {}).get(backend)
    except TypeError:  # unhashable, or no weak reference
        return None


def remember_times(function: Any, backend: str, times: tuple[float, float] | None) -> None:
    if times is None:
        return
    with contextlib.suppress(TypeError):
        _LEARNED.setdefault(function, {})[backend] = times


def check_env(env: Mapping[str, str]) -> None:
    """ValueError naming the first variable of ``env`` no process environment can hold.

    Checked once, before anything runs, so every mode refuses the same names: ``os.environ``
    would turn ``{"A=B": "x"}`` into ``A="B=x"`` on some modes, and other modes refuse it or
    an empty name later, in a worker.
    """
    for name, value in env.items():
        if not name:
            raise ValueError("env: an environment variable name must not be empty")
        if "=" in name or "\0" in name:
            raise ValueError(f"env: invalid environment variable name {name!r}: a name "
                             "must contain no '=' and no NUL character")
        if "\0" in value:
            raise ValueError(f"env[{name!r}]: the value must contain no NUL character")


def time_failure(result: ChunkResult, index: int, last: float, end: float) -> float:
    """Record when failed task ``index`` ran: it shares the span from the last clock read to
    ``end`` with the tasks done since. Returns when the next task starts: once its failure
    was recorded."""
    done = len(result.values)  # run_chunk sets the indices at the end
    pending = done - (result.marks[-1] if result.marks else 0)
    share = (end - last) / (pending + 1)
    if pending:
        result.ends.append(end - share)
        result.marks.append(done)
    result.timings[index] = (end - share, end)
    now = result.starts[done] = time.time()
    return now


def task_items(chunk: Chunk, staged: Any) -> tuple[Iterator[Any], bool]:
    """What :func:`run_block` takes the tasks from, and whether they have keywords: ``f(*a,
    **{})`` costs twice ``f(*a)``, itself more than ``f(a)`` (``Chunk.singles``). With
    ``staged``, the module resolving staged inputs, those are resolved in argument tuples:
    a chunk of single arguments goes back to tuples."""
    keywords = staged is not None or (not chunk.singles and any(chunk.lkwargs))
    if chunk.singles and keywords:
        chunk.largs, chunk.singles = [(arg,) for arg in chunk.largs], False
    items = zip(chunk.largs, chunk.lkwargs, strict=True) if keywords else chunk.largs
    return iter(items), keywords


def run_block(function: Callable[..., Any], items: Iterator[Any], count: int,
              append: Callable[[Any], None], keywords: bool, staged: Any,
              singles: bool = False) -> None:
    """Call ``function`` on the next ``count`` tasks of ``items`` (argument tuples, or (args,
    kwargs) pairs with ``keywords``), appending each value: ``run_chunk``'s inner loop, nothing
    per task but the call and the append. ``staged``: the module resolving staged inputs."""
    if singles:  # each item is the task's only argument (Chunk.singles)
        for arg in islice(items, count):
            append(function(arg))
        return
    if not keywords:
        for args in islice(items, count):
            append(function(*args))
        return
    for args, kwargs in islice(items, count):
        if staged is not None:  # inputs still marked here are on this disk already
            args, kwargs = staged.resolve_here(args, kwargs)
        append(function(*args, **kwargs))
