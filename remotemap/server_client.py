"""The caller's side of a worker server (``python -m remotemap.worker serve``).

The same class drives a server started here as a subprocess and one started on another host
over an SSH channel: all it needs is somewhere to write lines and somewhere to read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from remotemap.errors import RemotemapError


class _Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


class _Reader(Protocol):
    def readline(self) -> bytes: ...


def parse_done(line: bytes, where: str) -> tuple[int, str]:
    """``done CHUNK STATUS`` -> (chunk, status); anything else means the server went wrong."""
    words = line.decode(errors="replace").split()
    if len(words) == 3 and words[0] == "done":
        return int(words[1]), words[2]
    said = " ".join(words)
    hint = ""
    if "unknown command 'key" in said:
        hint = " (it predates run keys: install the same remotemap version there)"
    raise WorkerServerGone(f"worker server on {where} said {_redacted(said)!r}{hint}")


def _redacted(text: str) -> str:
    """``text`` without anything that looks like a run key (an old server echoes its line)."""
    return re.sub(r"\b[0-9a-f]{64}\b", "<run key>", text)


class WorkerServerGone(RemotemapError, RuntimeError):
    """The server stopped answering: its process or the connection to it ended."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    python_version: str
    remotemap_version: str
    cpus: int


class ProcessWriter:
    """A remote process (``remotemap.ssh.RemoteProcess``) as a server's stdin."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.write = process.write

    def flush(self) -> None:
        pass


class ProcessReader:
    """A remote process's stdout as a server's, read with ``timeout`` (None: no limit)."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.timeout: float | None = None

    def readline(self) -> bytes:
        line: bytes = self._process.readline(self.timeout)
        return line

    def read_exact(self, size: int) -> bytes:  # sent with its line: a long wait is a dead link
        data: bytes = self._process.read_exact(size, max(30.0, self.timeout or 0.0))
        return data


class WorkerServer:
    """``read_exact``: how to read bytes that follow a line, for a caller that asks for
    outcomes inline (:meth:`tune`); they wait in ``outcomes`` for the chunk's collector."""

    def __init__(self, stdin: _Writer, stdout: _Reader, where: str = "localhost",
                 read_exact: Callable[[int], bytes] | None = None) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self.where = where
        self._read_exact = read_exact
        #: Sealed outcomes that came after their ``done`` line, by chunk, until collected.
        self.outcomes: dict[int, bytes] = {}

    def wait_ready(self) -> ServerInfo:
        words = self._read_line()
        if len(words) != 5 or words[0] != "ready":
            raise WorkerServerGone(
                f"worker server on {self.where} did not start properly: {' '.join(words)!r}"
            )
        return ServerInfo(int(words[1]), words[2], words[3], int(words[4]))

    def tune(self, slots: int, inline: int) -> None:
        """At most ``slots`` chunks at once, the server holding the others until a slot frees;
        outcomes of at most ``inline`` bytes after their ``done`` line (needs ``read_exact``).
        Only for a server of this version: an older one knows no ``tune``."""
        self._send(f"tune {slots} {inline if self._read_exact is not None else 0}\n")

    def run(self, chunk_id: int, timeout: float | None = None) -> None:
        self._send(f"run {chunk_id}" + (f" {timeout}" if timeout is not None else "") + "\n")

    def put(self, chunk_id: int, parts: tuple[bytes, bytes]) -> None:
        """Send a chunk's sealed file (tag and data) for the server to write (a tuned one)."""
        self._send(f"put {chunk_id} {len(parts[0]) + len(parts[1])}\n", *parts)

    def _send(self, line: str, *payload: bytes) -> None:
        try:
            self._stdin.write(b"".join((line.encode(), *payload)))
            self._stdin.flush()
        except (OSError, ValueError) as exc:
            raise WorkerServerGone(f"worker server on {self.where} is gone: {exc}") from exc

    def next_done(self) -> tuple[int, str]:
        """Block until a chunk finishes; its id and status (``exit:0``, ``signal:9``, ...)."""
        words = self._read_line()
        if len(words) == 4 and words[0] == "done" and words[3].isdigit():
            if self._read_exact is None:
                raise WorkerServerGone(f"worker server on {self.where} sent an outcome inline "
                                       "unasked")
            chunk_id = int(words[1])
            self.outcomes[chunk_id] = self._read_exact(int(words[3]))
            return chunk_id, words[2]
        return parse_done(" ".join(words).encode(), self.where)

    def _read_line(self) -> list[str]:
        try:
            line = self._stdout.readline()
        except (OSError, ValueError) as exc:
            raise WorkerServerGone(f"worker server on {self.where} is gone: {exc}") from exc
        if not line:
            raise WorkerServerGone(f"worker server on {self.where} ended unexpectedly")
        return line.decode(errors="replace").split()
