"""Large buffers beside a pickle instead of inside it (pickle protocol 5, out of band).

A 100 MB result or argument pickled the usual way is copied into the pickle, sealed (an HMAC
over all of it), copied out again and unpickled: four passes over the data besides the link.
Out of band, the pickle keeps only a reference to each large buffer, and the buffer travels as
a raw file of its own, written from and read into memory once. The pickle stays sealed; the
raw files are never unpickled, only handed to the unpickler as the memory the values use.

``bytes`` and ``bytearray`` values get no buffer of their own from pickle (it copies them in
band), so a large one is wrapped (:func:`wrap`) to travel like a numpy array's data does.

Standard library only: every worker imports this module.
"""

from __future__ import annotations

import pickle
from typing import Any

#: Buffers smaller than this stay inside the pickle: a file per small buffer costs more.
OUT_OF_BAND_MIN = 1 << 20


class _Buffered:
    """A large ``bytes`` or ``bytearray``, pickled as a buffer (out of band when taken); it
    loads as the original type, so the class itself is never needed where it is loaded."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return type(self.data), (pickle.PickleBuffer(self.data),)


def is_large_bytes(value: Any) -> bool:
    return type(value) in (bytes, bytearray) and len(value) >= OUT_OF_BAND_MIN


def _wrap_one(value: Any) -> Any:
    return _Buffered(value) if is_large_bytes(value) else value


def wrap(value: Any) -> Any:
    """``value`` with its large ``bytes``/``bytearray`` ready to go out of band: the value
    itself or the items of a tuple, list or dict (a task returning ``(name, blob)``); deeper
    ones still go, in band."""
    kind = type(value)
    if kind is tuple or kind is list:
        return kind(map(_wrap_one, value))
    if kind is dict:
        return {key: _wrap_one(item) for key, item in value.items()}
    return _wrap_one(value)


def wrap_arguments(largs: list[tuple[Any, ...]], lkwargs: list[dict[str, Any]]
                   ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """A chunk's arguments with their large bytes wrapped (as ``wrap`` does for each)."""
    return [wrap(args) for args in largs], [wrap(kwargs) for kwargs in lkwargs]


def taker(taken: list[memoryview]) -> Any:
    """A ``buffer_callback`` that keeps the large buffers out of band (appended to ``taken``)
    and lets the others stay in band."""

    def take(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it in band
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        taken.append(raw)
        return False

    return take
