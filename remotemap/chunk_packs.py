"""Many small chunk files written as one *pack*: ``chunks/FIRST-LAST.pack``.

A cluster round of 1,000 one-task chunks would otherwise create 1,000 files on the shared
filesystem before its first job can start. A file's creation costs an inode: a round trip on
NFS, and on this project's test machine 0.3-1 ms of kernel time each in a crowded ``/tmp``.
Reading a chunk from a pack costs the worker one more ``pread``.

Layout of a pack::

    8 bytes   the length N of the index (big-endian)
    N bytes   the index, JSON: {"FILE": [offset, size], ...} (offsets from the index's end)
    ...       each chunk file's content, sealed as ``chunk_name(FILE)`` would be

The seals are those of the chunk files themselves (the run's key and the chunk's own name),
so a worker checks a packed chunk exactly as a loose one: a blob moved to another number, or
an index pointing elsewhere, fails the check. Chunks are packed only when small
(:data:`PACK_BLOB_LIMIT`): a large argument goes in a file of its own, not copied once more.
"""

from __future__ import annotations

import json
import posixpath
import re

from remotemap.errors import TamperedFile
from remotemap.protocol import CHUNKS, chunk_name
from remotemap.rundir import LocalRunDir

#: Fewer chunk files than this go as they are (a pack saves little, and older tools read them).
PACK_ABOVE = 8
#: A sealed chunk larger than this is never packed (the pack would copy it once more).
PACK_BLOB_LIMIT = 1 << 16
_HEADER = 8
_PACK = re.compile(r"(\d+)-(\d+)\.pack")


def pack_name(first: int, last: int) -> str:
    return posixpath.join(CHUNKS, f"{first:06d}-{last:06d}.pack")


def packed(blobs: dict[int, bytes]) -> dict[str, bytes]:
    """The files to write for the sealed chunk files ``blobs`` (chunk file number -> content):
    the small ones in one pack when there are more than :data:`PACK_ABOVE`, the rest as they
    are (``chunk_name``)."""
    small = {file: blob for file, blob in blobs.items() if len(blob) <= PACK_BLOB_LIMIT}
    loose = {chunk_name(file): blob for file, blob in blobs.items() if file not in small}
    if len(small) <= PACK_ABOVE:
        return {**loose, **{chunk_name(file): blob for file, blob in small.items()}}
    index: dict[str, list[int]] = {}
    offset = 0
    for file, blob in small.items():
        index[str(file)] = [offset, len(blob)]
        offset += len(blob)
    head = json.dumps(index, separators=(",", ":")).encode()
    pack = b"".join([len(head).to_bytes(_HEADER, "big"), head, *small.values()])
    return {**loose, pack_name(min(small), max(small)): pack}


class PackReader:
    """Finds chunk files in the packs of a run directory; the listing and the indexes read
    are kept, since one worker process reads many chunks of the same packs."""

    def __init__(self, rundir: LocalRunDir) -> None:
        self.rundir = rundir
        self._ranges: list[tuple[int, int, str]] | None = None
        self._indexes: dict[str, tuple[int, dict[str, list[int]]]] = {}

    def find(self, file: int) -> tuple[str, bytes] | None:
        """(the pack's name, chunk file ``file``'s sealed content), or None if no pack of the
        run directory holds it."""
        for fresh in (False, True):
            for first, last, name in self._packs(fresh):
                if first <= file <= last:
                    found = self._read(name, file)
                    if found is not None:
                        return name, found
        return None

    def _packs(self, fresh: bool) -> list[tuple[int, int, str]]:
        if self._ranges is None or fresh:
            matches = [(_PACK.fullmatch(n), n) for n in self.rundir.listdir(CHUNKS)]
            self._ranges = [(int(m.group(1)), int(m.group(2)), posixpath.join(CHUNKS, n))
                            for m, n in matches if m]
        return self._ranges

    def _read(self, name: str, file: int) -> bytes | None:
        if name not in self._indexes:
            size = int.from_bytes(self.rundir.read_at(name, 0, _HEADER) or b"", "big")
            raw = self.rundir.read_at(name, _HEADER, size) or b"{}"
            try:
                index = json.loads(raw)
            except ValueError:
                index = None
            if not isinstance(index, dict):  # the seals cover the chunks, not the index
                raise TamperedFile(self.rundir.path(name))
            self._indexes[name] = (_HEADER + size, index)
        start, index = self._indexes[name]
        where = index.get(str(file))
        if where is None:
            return None
        try:
            offset, length = (int(n) for n in where)
        except (TypeError, ValueError):
            raise TamperedFile(self.rundir.path(name)) from None
        return self.rundir.read_at(name, start + offset, length)
