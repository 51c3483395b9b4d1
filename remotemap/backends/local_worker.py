"""What a ``local`` worker process runs: a chunk, with the run's function cached per worker.

Imported by every worker of the pool (``local_pool``), by the child forked for a call's first
chunk (``local_fork``), and by the caller for the result format (a chunk's consecutive indices
travel as a span, two numbers, not a list pickled each way).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

from remotemap.buffers import PackedChunk, unmap, unpack
from remotemap.execution import (
    chunk_failed,
    dumps,
    dumps_result,
    loads,
    loads_result,
    run_chunk,
)
from remotemap.leftovers import Stdio, become_subreaper, exit_with_parent, kill_children
from remotemap.plain import dumps_plain
from remotemap.progress import ChunkWatch
from remotemap.tasks import Chunk, ChunkResult

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


def init_worker() -> None:
    """Worker initializer: follow the caller's life, and adopt what tasks leave running."""
    exit_with_parent("remotemap-watch-parent")  # the caller's death, even by SIGKILL
    become_subreaper()
    _STDIO.append(Stdio())


def run_in_worker(token: str, blob: bytes, sys_path: list[str], packed: PackedChunk,
                   counter: tuple[str, int] | None = None,
                   span: tuple[int, int] | None = None) -> bytes:
    function = _FUNCTIONS.get(token)
    indices = packed.indices if span is None else range(*span)
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
            return dumps_span_result(run_chunk(function, chunk), span)
        try:
            return dumps_span_result(run_chunk(function, chunk, started=_watch().watch(counter)),
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
#: The largest pickle of a chunk's plain values sent on its own: it is copied once more into
#: the message, cheap for the many small values of tiny tasks. Larger values go with the
#: result in one pass, as any others do.
PLAIN_VALUES_LIMIT = 1 << 20
#: The first byte of a span result whose values are plain and travel as a pickle of their own
#: (a pickle's first byte is 0x80, so the two cannot be mistaken).
_PLAIN_SPAN = b"P"


def chunk_span(chunk: Chunk) -> tuple[int, int] | None:
    """A chunk's consecutive indices (every first attempt) as (start, stop): they then cross
    to the worker and back as two numbers, not a list of ints pickled each way."""
    return (chunk.indices[0], chunk.indices[-1] + 1) if chunk.consecutive and chunk.indices \
        else None


def dumps_span_result(result: ChunkResult, span: tuple[int, int] | None) -> bytes:
    if span is None or result.failures:
        return dumps_result(result)
    # No task failed: the indices are the span's. A range pickles as three numbers;
    # loads_span_result gives the result the indices of the chunk that was sent.
    result.indices = range(*span)
    # The common case of tiny tasks: plain values, checked as they are pickled.
    values = dumps_plain(result.values, PLAIN_VALUES_LIMIT)
    if values is None:
        return dumps_result(result, _SPAN)
    result.values = []
    return _PLAIN_SPAN + dumps((result, values))


def loads_span_result(data: bytes, indices: Sequence[int] | None = None) -> ChunkResult:
    """The result :func:`dumps_span_result` wrote; ``indices``: those of the chunk sent, which
    a span result then takes as they are (no list of new ints made and freed again)."""
    result: ChunkResult
    token: str | None
    if data[:1] == _PLAIN_SPAN:
        result, values = loads(memoryview(data)[1:])
        result.values, token = pickle.loads(values), _SPAN
    else:
        token, result = loads_result(data)
    if token == _SPAN:
        span = result.indices
        result.indices = indices if indices is not None and len(indices) == len(span) \
            else list(span)
        # A value that could not be pickled left a gap: then they are not consecutive.
        result.consecutive = not result.failures
    return result
