"""The worker server's stdin: its first line (the run's key), command lines, and the bytes a
``put`` line announces.

``put CHUNK SIZE`` and SIZE bytes after it: the chunk's sealed file, which the server writes
into the run directory itself (the ``ssh`` mode sends small chunks this way, on the channel it
already holds, sparing the SFTP round trips of an upload). Only a chunk's file can be put, by
its number: nothing else of the run directory is named by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


class StdinReader:
    """Cuts what stdin gave into commands: each a line, with its payload for a ``put``."""

    def __init__(self) -> None:
        self._pending = b""
        self._wanted: tuple[str, int] | None = None  # a put line waiting for its bytes

    def feed(self, data: bytes) -> Iterator[tuple[str, bytes | None]]:
        """The commands ``data`` completes, in order: (line, the put's bytes or None)."""
        self._pending += data
        while True:
            if self._wanted is not None:
                line, size = self._wanted
                if len(self._pending) < size:
                    return
                payload, self._pending = self._pending[:size], self._pending[size:]
                self._wanted = None
                yield line, payload
                continue
            raw, found, rest = self._pending.partition(b"\n")
            if not found:
                return
            self._pending = rest
            line = raw.decode(errors="replace")
            words = line.split()
            if len(words) == 3 and words[0] == "put" and words[1].isdigit() \
                    and words[2].isdigit():
                self._wanted = (line, int(words[2]))
                continue
            yield line, None


def read_key_line() -> tuple[bytes, tuple[int, int] | None]:
    """The first line of stdin, ``key HEX [DEV INO]``: the run's key and, when the caller made
    the directory on this machine, its identity. Read a byte at a time: the rest of stdin is
    the server's, read unbuffered by its loop."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 256:
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    words = line.decode(errors="replace").split()
    try:
        if words[0] != "key" or len(words) not in (2, 4):
            raise ValueError
        key = bytes.fromhex(words[1])
        identity = (int(words[2]), int(words[3])) if len(words) == 4 else None
    except (IndexError, ValueError):
        raise SystemExit("remotemap.worker serve: the first line of stdin must be "
                         "'key HEX [DEV INO]'") from None
    return key, identity
