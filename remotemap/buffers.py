"""Large arguments cross to local workers as memory-mapped files instead of through a pipe.

Pickle protocol 5 hands every large contiguous buffer (a numpy array's data, bytes) to a
callback instead of copying it into the pickle. Those buffers are written once to a private
directory (in ``/dev/shm`` when it is there, so they never touch a disk) and the worker maps
them copy-on-write: the array it sees is writable, and nothing is copied until it writes.
Pushing 50 MB through a pipe copies it four times; this copies it once.

A file whose chunk is done is written over by a later chunk rather than removed: giving
``/dev/shm`` 50 MB of new pages and taking them back costs twice the copy itself (30 + 10 ms
against 15 here). That is safe only once no process maps the file any more, since a
copy-on-write mapping still shows the file's later writes on the pages it did not write
itself. A chunk is released when its process ended (``local_with_dumps``, the forked first
chunk) or when a pool worker answered, after :func:`unmap` closed its mappings; a worker
whose task kept an argument alive (in a global, say) removes that file instead, so the caller
writes the next chunk to a new one.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from remotemap.execution import dumps
from remotemap.protocol import map_buffer_files
from remotemap.tasks import Chunk, single_arguments

#: Buffers smaller than this stay inside the pickle: a file per small buffer costs more.
SPILL_THRESHOLD = 1 << 20


@dataclass
class PackedChunk:
    """A chunk as it travels to a local worker: its tasks pickled, large buffers as files."""

    id: int
    indices: Sequence[int]
    data: bytes
    buffer_files: list[str] = field(default_factory=list)
    #: ``data`` holds each task's only positional argument, not a tuple each (``pack``).
    singles: bool = False


class BufferSpill:
    """Packs chunks for local workers; owns the files it spills, reuses and removes them."""

    def __init__(self, threshold: int = SPILL_THRESHOLD, parent: str | None = None) -> None:
        self.threshold = threshold
        #: Where the private directory of files goes: /dev/shm (else the temp dir) by default.
        self.parent = parent
        self._dir: str | None = None
        self._files: dict[int, list[str]] = {}
        #: Files of released chunks, to be written over: path -> size.
        self._free: dict[str, int] = {}
        self._names = itertools.count()

    def pack(self, chunk: Chunk, singles: bool = False) -> PackedChunk:
        """Pickle the chunk's arguments; raises as pickling does if one cannot be pickled.
        ``singles``: tasks of one positional argument each and no keywords go as a plain list
        of those arguments (``tasks.single_arguments``; :func:`unpack` gives them back as a
        ``Chunk.singles`` chunk)."""
        files: list[str] = []
        flat = single_arguments(chunk) if singles else None

        def spill(buffer: pickle.PickleBuffer) -> bool:
            raw = buffer.raw()
            if raw.nbytes < self.threshold:
                return True  # in band
            path = self._spill(raw)
            if path is None:
                return True  # no room to spill (a full /dev/shm): send it in band instead
            files.append(path)
            return False

        try:
            arguments = (chunk.largs, chunk.lkwargs) if flat is None else (flat, [])
            data = dumps(arguments, protocol=5, buffer_callback=spill)
        except BaseException:
            _unlink(files)
            raise
        if files:
            self._files[chunk.id] = files
        return PackedChunk(chunk.id, chunk.indices, data, files, singles=flat is not None)

    def pack_arguments(self, chunk: Chunk) -> tuple[bytes, list[str]]:
        """The chunk's arguments pickled, and the files its large buffers went to: the
        ``protocol.ArgumentPacker`` of a worker that reads chunk files on this machine."""
        packed = self.pack(chunk)
        return packed.data, packed.buffer_files

    def release(self, chunk_id: int, reuse: bool = True) -> None:
        """The chunk is done: its files can go, or be written over by a later chunk if no
        process maps them any more (``reuse``: its process ended, or :func:`unmap` ran)."""
        files = self._files.pop(chunk_id, [])
        if not reuse:
            _unlink(files)
            return
        for path in files:
            with contextlib.suppress(OSError):  # gone: a worker kept it mapped (unmap)
                self._free[path] = os.stat(path).st_size

    def close(self) -> None:
        self._files.clear()
        self._free.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _spill(self, raw: memoryview) -> str | None:
        """The file ``raw`` was written to: a free one written over, else a new one; None
        when it could not be written (the file is then removed)."""
        opened = self._open(raw.nbytes)
        if opened is None:
            return None
        path, fd = opened
        try:
            _write(fd, raw)
            if os.fstat(fd).st_size != raw.nbytes:
                os.ftruncate(fd, raw.nbytes)  # a larger file reused: the rest goes
        except OSError:
            _unlink([path])
            return None
        finally:
            os.close(fd)
        return path

    def _open(self, size: int) -> tuple[str, int] | None:
        path = self._reusable(size)
        if path is not None:
            with contextlib.suppress(OSError):
                return path, os.open(path, os.O_WRONLY)
        path = os.path.join(self._directory(), f"{next(self._names)}.buf")
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None

    def _reusable(self, size: int) -> str | None:
        """A free file to write ``size`` bytes over: one of that size, else the smallest
        larger one (shrunk), else the largest (grown); None when none is free."""
        if not self._free:
            return None
        larger = [(n, p) for p, n in self._free.items() if n >= size]
        _, path = min(larger) if larger else max((n, p) for p, n in self._free.items())
        del self._free[path]
        return path

    def _directory(self) -> str:
        if self._dir is None:
            shm = "/dev/shm"
            parent = self.parent
            if parent is None and os.path.isdir(shm) and os.access(shm, os.W_OK):
                parent = shm
            self._dir = tempfile.mkdtemp(prefix="remotemap-args-", dir=parent)  # 0700
        return self._dir


def unpack(packed: PackedChunk) -> tuple[Chunk, list[tuple[str, mmap.mmap]]]:
    """The chunk back, its large buffers mapped from their files (copy-on-write); and the
    mappings, for :func:`unmap` once the chunk's tasks are done."""
    buffers = map_buffer_files(packed.buffer_files)
    largs, lkwargs = pickle.loads(packed.data, buffers=buffers)
    if packed.singles:  # no keywords: one empty dict shared by all (f(**d) copies it)
        lkwargs = [{}] * len(largs)
    return (Chunk(packed.id, packed.indices, largs, lkwargs, singles=packed.singles),
            list(zip(packed.buffer_files, buffers, strict=True)))


def unmap(mappings: list[tuple[str, mmap.mmap]]) -> None:
    """In a worker that lives on, once nothing of the chunk is referenced here: close its
    mappings, so the caller may write the files over. A mapping a task kept alive (an array
    stored in a global) cannot be closed; its file is removed instead, so that the caller
    never writes under it (the mapping stays valid: the file lives on while mapped)."""
    for path, mapping in mappings:
        try:
            mapping.close()
        except BufferError:  # exported: an array still uses it
            _unlink([path])


def _write(fd: int, data: memoryview) -> None:
    view = data.cast("B")
    while view:
        view = view[os.write(fd, view):]


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
