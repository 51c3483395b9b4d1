"""Plain data (numbers, strings, bytes, None, and lists, tuples, dicts and sets of them),
pickled in one pass in C that is also the check that the data is plain.

Plain values need no care on the way back: any Python loads them, where another value is
pickled on its own so that one the caller cannot load fails alone (``execution.dumps_result``).
A ``local`` worker sends a chunk's plain values as one pickle of this kind
(``backends.local_worker.dumps_span_result``). Checking each value's type before pickling them
cost as much as the pickling (~25 ns a value); the C pickler checks them as it writes them.
"""

from __future__ import annotations

import io
import pickle
from typing import Any


class _NotPlain(Exception):
    """An object that :func:`dumps_plain` does not take."""


class _PlainPickler(pickle.Pickler):
    """The C pickler writes None, bools, ints, floats, strings, bytes, lists, tuples, dicts and
    sets itself, and asks ``reducer_override`` about any other object: here only a complex
    number passes (and its class, which its reduction names)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is complex or obj is complex:
            return NotImplemented
        raise _NotPlain


class _CappedFile(io.BytesIO):
    """A pickle's output that refuses to grow past ``limit`` bytes (raising _NotPlain). The
    pickler writes it a frame (~64 KiB) or a large buffer at a time: a few calls."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + memoryview(data).nbytes > self.limit:
            raise _NotPlain
        return super().write(data)


def dumps_plain(obj: Any, limit: int | None = None) -> bytes | None:
    """``obj`` pickled if it holds only plain data (numbers, strings, bytes, None, in lists,
    tuples, dicts and sets), which any Python loads, in at most ``limit`` bytes; else None.
    The check is the pickling itself, one pass in C: checking each value's type first cost as
    much again."""
    with io.BytesIO() if limit is None else _CappedFile(limit) as file:
        try:
            _PlainPickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        except (_NotPlain, RecursionError):
            return None
        return file.getvalue()
