"""Large arguments cross to local workers as memory-mapped files instead of through a pipe.

Pickle protocol 5 hands every large contiguous buffer (a numpy array's data, bytes) to a
callback instead of copying it into the pickle. Those buffers are written once to a private
directory (in ``/dev/shm`` when it is there, so they never touch a disk) and the worker maps
them copy-on-write: the array it sees is writable, and nothing is copied until it writes.
Pushing 50 MB through a pipe copies it four times; this copies it once.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field

from remotemap.execution import dumps
from remotemap.protocol import map_buffer_files
from remotemap.tasks import Chunk

#: Buffers smaller than this stay inside the pickle: a file per small buffer costs more.
SPILL_THRESHOLD = 1 << 20


@dataclass
class PackedChunk:
    """A chunk as it travels to a local worker: its tasks pickled, large buffers as files."""

    id: int
    indices: list[int]
    data: bytes
    buffer_files: list[str] = field(default_factory=list)


class BufferSpill:
    """Packs chunks for local workers; owns the files it spills and removes them."""

    def __init__(self, threshold: int = SPILL_THRESHOLD) -> None:
        self.threshold = threshold
        self._dir: str | None = None
        self._files: dict[int, list[str]] = {}

    def pack(self, chunk: Chunk) -> PackedChunk:
        """Pickle the chunk's arguments; raises as pickling does if one cannot be pickled."""
        files: list[str] = []

        def spill(buffer: pickle.PickleBuffer) -> bool:
            raw = buffer.raw()
            if raw.nbytes < self.threshold:
                return True  # in band
            path = os.path.join(self._directory(), f"{chunk.id}-{len(files)}.buf")
            try:
                _write(path, raw)
            except OSError:
                return True  # no room to spill (a full /dev/shm): send it in band instead
            files.append(path)
            return False

        try:
            data = dumps((chunk.largs, chunk.lkwargs), protocol=5, buffer_callback=spill)
        except BaseException:
            _unlink(files)
            raise
        if files:
            self._files[chunk.id] = files
        return PackedChunk(chunk.id, chunk.indices, data, files)

    def pack_arguments(self, chunk: Chunk) -> tuple[bytes, list[str]]:
        """The chunk's arguments pickled, and the files its large buffers went to: the
        ``protocol.ArgumentPacker`` of a worker that reads chunk files on this machine."""
        packed = self.pack(chunk)
        return packed.data, packed.buffer_files

    def release(self, chunk_id: int) -> None:
        """The chunk is done: its files can go (a worker's open mappings stay valid)."""
        _unlink(self._files.pop(chunk_id, []))

    def close(self) -> None:
        self._files.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _directory(self) -> str:
        if self._dir is None:
            shm = "/dev/shm"
            parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
            self._dir = tempfile.mkdtemp(prefix="remotemap-args-", dir=parent)  # 0700
        return self._dir


def unpack(packed: PackedChunk) -> Chunk:
    """The chunk back, its large buffers mapped from their files (copy-on-write)."""
    buffers = map_buffer_files(packed.buffer_files)
    largs, lkwargs = pickle.loads(packed.data, buffers=buffers)
    return Chunk(packed.id, packed.indices, largs, lkwargs)


def _write(path: str, data: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = data.cast("B")
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink([path])
        raise
    os.close(fd)


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
