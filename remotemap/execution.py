"""Running a chunk of tasks inside a worker, and turning what happened into records.

This module is imported by every worker (in this process, in loky worker processes, in forked
children, on remote hosts), so it depends on the standard library and cloudpickle only.
"""

from __future__ import annotations

import dataclasses
import io
import linecache
import os
import pickle
import re
import socket
import sys
import traceback
import types
from collections import ChainMap
from collections.abc import Callable
from operator import countOf
from time import time
from typing import Any, ClassVar

import cloudpickle

from remotemap import outofband
from remotemap.capture import Buffer, Printer
from remotemap.errors import FailureKind, TaskFailure
from remotemap.tasks import Chunk, ChunkResult, run_block, task_items, time_failure

_HOST = socket.gethostname()


#: How cloudpickle itself reduces a code object (public through the pickler's dispatch table).
_CLOUDPICKLE_CODE_REDUCE = cloudpickle.CloudPickler.dispatch_table[types.CodeType]


def _reduce_code(code: types.CodeType) -> tuple[Any, ...]:
    rebuild, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return _code_with_filename, (rebuild, args, code.co_filename)


def _code_with_filename(rebuild: Callable[..., types.CodeType], args: tuple[Any, ...],
                        filename: str) -> types.CodeType:
    return rebuild(*args).replace(co_filename=filename)


class _Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, except that code sent by value keeps the name of the file it came from.

    cloudpickle 3.1.3 started naming every such code object ``<dynamic-code>`` (to make its
    payloads deterministic), which left remote tracebacks of ``__main__`` functions, lambdas
    and notebook cells without a file or a source line. The file name costs a few bytes and
    gives them back: the worker's linecache finds the file where it exists, and the caller
    fills in the lines where it does not (:func:`fill_source_lines`).
    """

    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap({types.CodeType: _reduce_code},
                              cloudpickle.CloudPickler.dispatch_table)


def dumps(obj: object, protocol: int | None = None,
          buffer_callback: Callable[[Any], Any] | None = None) -> bytes:
    """cloudpickle, typed: functions and classes defined in ``__main__`` travel by value."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def loads(data: bytes | memoryview, buffers: list[Any] | None = None) -> Any:
    return cloudpickle.loads(data, buffers=buffers)


#: A frame line of a formatted traceback, and the source line that should follow it.
_FRAME = re.compile(r'^(?P<indent> *)File "(?P<file>[^"]+)", line (?P<line>\d+), in ')


def fill_source_lines(text: str) -> str:
    """``text``, a formatted traceback, with the source lines the worker could not read.

    A function sent by value may come from a file the worker's host does not have (an ssh
    host, a notebook cell): its frames arrive with a file and line number but no source. This
    process defined the function, so its linecache usually has the lines.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        frame = _FRAME.match(line)
        if frame is None:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        indent = frame["indent"]
        if following.startswith(indent + "  ") and not _FRAME.match(following):
            continue  # the worker found the source
        source = linecache.getline(frame["file"], int(frame["line"])).strip()
        if source:
            out.append(f"{indent}  {source}\n")
    return "".join(out)


def this_host() -> str:
    return _HOST


def worker_id() -> str:
    """``host:pid`` of this process, as a chunk's result names who ran it (read each time, not
    at import: forked workers share this module)."""
    return f"{_HOST}:{os.getpid()}"


def failure_from_exception(
    index: int, exc: BaseException, *, kind: FailureKind = "exception", host: str | None = None
) -> TaskFailure:
    """A record of ``exc`` raised by task ``index``, keeping the traceback as text.

    Never raises for an odd exception (a ``__str__`` that raises, a ``__reduce__`` that calls
    ``exit()``): the record is all the caller will get, so it must always be made.
    """
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as err:  # a broken exception must not hide the task
        text = f"(the traceback could not be formatted: {safe_str(err)})"
    try:
        # cloudpickle, so an exception class that came by value (defined in __main__ or sent
        # by value) goes back the same way; one that will not round-trip is not chained.
        blob: bytes | None = dumps(exc)
        loads(blob)  # type: ignore[arg-type]
    except BaseException:  # SystemExit from a __reduce__ included
        blob = None
    return TaskFailure(
        index=index,
        exception_type=type(exc).__qualname__,
        message=safe_str(exc),
        traceback=text,
        host=host or _HOST,
        kind=kind,
        exception_pickle=blob,
    )


def safe_str(obj: object) -> str:
    """``str(obj)``, or a stand-in naming the type when its ``__str__`` raises."""
    try:
        return str(obj)
    except BaseException as err:  # any error here is the object's, not ours
        return (f"<str() of this {type(obj).__qualname__} raised "
                f"{type(err).__qualname__}>")


def run_chunk(function: Callable[..., Any], chunk: Chunk,
              interrupted: Callable[[], bool] | None = None,
              started: Callable[[ChunkResult], None] | None = None,
              echo: Printer | None = None) -> ChunkResult:
    """Call ``function`` on every task of ``chunk``; an exception fails its task only.

    Any exception does, ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` included,
    except a ``KeyboardInterrupt`` that a real Ctrl-C raised in this very process:
    ``interrupted()`` says whether one arrived (given by the caller's own process, where Ctrl-C
    must stop the run; a worker process leaves it None). ``started(result)`` is given the
    result as it is filled, before the first task: what a progress bar that moves per task
    watches, at no cost per task. What each task prints is captured (``result.outputs``, see
    :mod:`remotemap.capture`); ``echo`` also shows it at once.
    """
    with Buffer(echo) as printed:
        return _run_tasks(function, chunk, interrupted, started, printed)


def _run_tasks(function: Callable[..., Any], chunk: Chunk,
               interrupted: Callable[[], bool] | None,
               started: Callable[[ChunkResult], None] | None, printed: Buffer) -> ChunkResult:
    result = ChunkResult(chunk.id, worker=worker_id())
    if started is not None:
        started(result)
    values, failures = result.values, result.failures
    printed.follow(chunk.indices, result)
    ends, marks = result.ends, result.marks  # see ChunkResult.ends
    last = result.starts[0] = time()
    # Only once a Staged marker was made or unpickled here (the module may be loaded anyway)
    staged = sys.modules.get("remotemap.staged")
    staged = staged if staged is not None and staged.Staged.made else None
    items, keywords = task_items(chunk, staged)
    stride, n = 1, len(chunk.indices)
    while len(values) + len(failures) < n:
        try:  # tasks in blocks, a plain loop each: nothing per task but the call and append
            run_block(function, items, stride, values.append, keywords, staged, chunk.singles)
        except BaseException as exc:
            end = time()
            if interrupted is not None and isinstance(exc, KeyboardInterrupt) and interrupted():
                raise
            # Drop our frames: the traceback should start in the user's function.
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            if tb is not None and tb.tb_frame.f_code is run_block.__code__:
                tb = tb.tb_next
            exc.__traceback__ = tb
            index = chunk.indices[len(values) + len(failures)]
            failures.append(failure_from_exception(index, exc))
            last, stride = time_failure(result, index, last, end), 1
        else:  # read the clock after each block; blocks grow where tasks take under 10 us
            now = time()
            ends.append(now)
            marks.append(len(values))
            stride, last = (min(stride * 2, 1024) if now - last < stride * 1e-5 else 1), now
    failed = {failure.index for failure in failures}  # a comprehension: ~80 ns a task
    # A range is shared as it is (read-only); a list is copied, as the caller may reuse it.
    result.indices = [i for i in chunk.indices if i not in failed] if failed else \
        chunk.indices if isinstance(chunk.indices, range) else [*chunk.indices]
    printed.done()
    return result


def chunk_failed(chunk: Chunk, exc: BaseException) -> ChunkResult:
    """Every task of ``chunk`` failed with ``exc`` (the function could not even be loaded)."""
    return ChunkResult(chunk.id, failures=[failure_from_exception(i, exc) for i in chunk.indices],
                       worker=worker_id())


#: Result types that every Python can load: a chunk of only these goes as one pickle.
_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def dumps_result(result: ChunkResult, token: str | None = None,
                 buffers: list[list[memoryview]] | None = None) -> bytes:
    """Pickle a chunk's result (with the run's token, if given), for :func:`loads_result`.

    A value that cannot be pickled (or whose pickling raises anything, ``SystemExit``
    included) fails its own task. Plain values (numbers, strings) go as one list, the fast
    path for many tiny tasks; any other value is pickled on its own, so that one the caller
    cannot load fails that task alone (see :func:`loads_result`). With ``buffers``, each
    value's large buffers go there instead (a list per value kept, ``outofband``).
    """
    values = result.values
    kind = type(values[0]) if values else int  # one plain type is counted in C, a mix in a set
    if ((kind in _PLAIN and countOf(map(type, values), kind) == len(values))
            or _PLAIN.issuperset(map(type, values))) and (
            buffers is None or not any(map(outofband.is_large_bytes, values))):
        return dumps((token, result))
    blob, ends = _pickle_each(result, buffers)
    bare = dataclasses.replace(result, values=[])
    return dumps((token, bare, blob, ends))


def _pickle_each(result: ChunkResult, buffers: list[list[memoryview]] | None = None
                 ) -> tuple[bytes, list[int]]:
    """Every value as its own pickle, back to back; where each ends. Unpicklable values are
    moved from ``result``'s values to its failures."""
    buffer = io.BytesIO()
    taken: list[memoryview] = []  # the large buffers of the value being pickled
    take = None if buffers is None else outofband.taker(taken)
    pickler = cloudpickle.Pickler(buffer, buffer_callback=take)
    ends: list[int] = []
    kept: list[int] = []
    kept_values: list[Any] = []
    for index, value in zip(result.indices, result.values, strict=True):
        start, taken[:] = buffer.tell(), []
        try:
            pickler.dump(value if take is None else outofband.wrap(value))
        except BaseException as exc:  # a __reduce__ calling exit() included
            buffer.seek(start)
            buffer.truncate()
            pickler = cloudpickle.Pickler(buffer, buffer_callback=take)  # its state is unknown
            result.failures.append(unpicklable_failure(index, "result", value, exc))
        else:
            pickler.clear_memo()  # each value stands alone: loadable without the others
            kept.append(index)
            kept_values.append(value)
            ends.append(buffer.tell())
            if buffers is not None:
                buffers.append(list(taken))
    if len(kept) != len(result.indices):
        result.spell_out_times()
    result.indices, result.values = kept, kept_values
    return buffer.getvalue(), ends


def loads_result(data: bytes | memoryview, buffers: list[list[Any]] | None = None
                 ) -> tuple[str | None, ChunkResult]:
    """The token and chunk result that :func:`dumps_result` wrote (``buffers``: the buffers
    it put out of band, a list per value).

    A value that cannot be loaded here (its class missing in this process, a ``__reduce__``
    that raises on load) fails its own task, kind ``"pickling"``; the others are kept.
    """
    parts = loads(data)
    if isinstance(parts, ChunkResult):  # stored by a version that kept no token
        return None, parts
    if len(parts) == 2:
        token, result = parts
        return token, result
    token, result, blob, ends = parts
    view = memoryview(blob)
    indices: list[int] = []
    start = 0
    for k, (index, end) in enumerate(zip(result.indices, ends, strict=True)):
        try:
            result.values.append(pickle.loads(view[start:end], buffers=buffers and buffers[k]))
        except KeyboardInterrupt:
            raise  # here in the caller's process, a Ctrl-C
        except BaseException as exc:  # SystemExit from a __reduce__ included
            result.failures.append(unloadable_failure(index, exc))
        else:
            indices.append(index)
        start = end
    if len(indices) != len(result.indices):
        result.spell_out_times()
    result.indices = indices
    return token, result


def unloadable_failure(index: int, exc: BaseException) -> TaskFailure:
    """The failure of a task whose result was pickled where it ran but cannot be loaded here."""
    return _pickling_failure(index, exc, f"the result of task {index} cannot be unpickled in "
                                         f"the caller: {type(exc).__qualname__}: {safe_str(exc)}")


def unpicklable_failure(index: int, what: str, obj: object, exc: BaseException) -> TaskFailure:
    """The failure of a task whose argument or result cannot cross a process boundary."""
    kind = type(obj).__module__ + "." + type(obj).__qualname__
    return _pickling_failure(index, exc, f"the {what} of task {index} cannot be pickled "
                                         f"({kind}): {safe_str(exc)}")


def _pickling_failure(index: int, exc: BaseException, message: str) -> TaskFailure:
    return dataclasses.replace(failure_from_exception(index, exc, kind="pickling"),
                               message=message)


#: What pickling an argument in the caller may raise that fails its task only: a
#: ``__reduce__`` may even call ``exit()``. (Not KeyboardInterrupt: here it is a real Ctrl-C.)
PICKLING_ERRORS = (Exception, SystemExit)


def find_unpicklable(chunk: Chunk) -> tuple[Chunk, list[TaskFailure]]:
    """Split out the tasks whose arguments cannot be pickled, each with a failure naming why."""
    kept: list[int] = []
    keep = Chunk(chunk.id, kept, [], [])
    failures: list[TaskFailure] = []
    for index, args, kwargs in zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True):
        try:
            dumps((args, kwargs))
        except PICKLING_ERRORS as exc:
            culprit = _first_unpicklable([*args, *kwargs.values()])
            failures.append(unpicklable_failure(index, "arguments", culprit, exc))
        else:
            kept.append(index)
            keep.largs.append(args)
            keep.lkwargs.append(kwargs)
    return keep, failures


def _first_unpicklable(objects: list[Any]) -> object:
    for obj in objects:
        try:
            dumps(obj)
        except PICKLING_ERRORS:
            return obj
    return objects[0] if objects else None


def lost_chunk_result(
    chunk: Chunk, why: str, *, kind: FailureKind = "crash", host: str | None = None,
    log_tail: str = ""
) -> ChunkResult:
    """Every task of ``chunk`` failed because the process running it ended without an outcome.

    ``why`` completes "the worker process ...", e.g. "was killed by SIGKILL (signal 9)".
    """
    exception_type = {"crash": "WorkerDied", "timeout": "TaskTimeout"}.get(kind, "WorkerLost")
    failures = []
    for index in chunk.indices:
        message = f"the worker process running task {index} {why}"
        trace = f"output of the worker (last lines):\n{log_tail}" if log_tail.strip() else ""
        failures.append(TaskFailure(
            index=index, exception_type=exception_type, message=message, traceback=trace,
            host=host or _HOST, kind=kind,
            # alone in its process, the task wrote all of the log: what it printed
            output=log_tail if len(chunk.indices) == 1 else "",
        ))
    return ChunkResult(chunk.id, failures=failures)


def tail(text: bytes, lines: int = 20) -> str:
    return "\n".join(text.decode(errors="replace").rstrip().splitlines()[-lines:])


def pickle_function(function: Callable[..., Any]) -> bytes:
    """The function as bytes, or a TypeError that says which function and why."""
    try:
        return dumps(function)
    except Exception as exc:
        name = getattr(function, "__qualname__", type(function).__name__)
        raise TypeError(
            f"the function {name!r} cannot be pickled to send it to the workers: {exc}"
        ) from exc
