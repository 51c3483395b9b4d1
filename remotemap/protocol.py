"""The on-disk protocol shared by every out-of-process backend.

A run directory holds everything one run needs, under names given here and nowhere else::

    RUN/function.pkl          the function, cloudpickled once per run
    RUN/chunks/000007.pkl     chunk 7: its tasks and the run's token
    RUN/outcomes/000007.pkl   what chunk 7 gave back, written atomically by the worker
    RUN/logs/000007.log       stdout and stderr of the process that ran chunk 7
    RUN/work/42/              task 42's working directory (when tasks get their own)
    RUN/run.json              what the run is (mode, counts, times), for status and resume

Every chunk file carries the run's random token and the worker copies it into the outcome:
an outcome whose token differs belongs to another run and is never taken as a result.

Paths are POSIX strings so the same layout names files on a remote host.

The worker side of the line protocol spoken over a worker server's stdin and stdout is also
fixed here: the caller sends ``run CHUNK [TIMEOUT]`` lines; the server answers ``ready PID
PYTHON VERSION CPUS`` once, then ``done CHUNK STATUS`` per chunk, STATUS being ``exit:N``,
``signal:N`` or ``timeout``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import posixpath
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotemap.errors import TaskFailure
from remotemap.execution import PICKLING_ERRORS, dumps, find_unpicklable, loads_result
from remotemap.tasks import Chunk, ChunkResult

FUNCTION = "function.pkl"
CHUNKS = "chunks"
OUTCOMES = "outcomes"
LOGS = "logs"
META = "run.json"
WORK = "work"


@dataclass(frozen=True)
class RunLayout:
    """The names of every file in one run directory."""

    root: str

    @property
    def function(self) -> str:
        return posixpath.join(self.root, FUNCTION)

    @property
    def meta(self) -> str:
        return posixpath.join(self.root, META)

    def subdirs(self) -> list[str]:
        return [posixpath.join(self.root, d) for d in (CHUNKS, OUTCOMES, LOGS)]

    def chunk(self, chunk_id: int) -> str:
        return posixpath.join(self.root, CHUNKS, f"{chunk_id:06d}.pkl")

    def outcome(self, chunk_id: int) -> str:
        return posixpath.join(self.root, OUTCOMES, f"{chunk_id:06d}.pkl")

    def workdir(self, index: int) -> str:
        """The working directory of task ``index`` when tasks run in their own directories."""
        return posixpath.join(self.root, WORK, str(index))

    def log(self, chunk_id: int) -> str:
        return posixpath.join(self.root, LOGS, f"{chunk_id:06d}.log")


def new_token() -> str:
    return secrets.token_hex(8)


def encode_chunk(token: str, chunk: Chunk) -> bytes:
    """Two pickles back to back: a header any worker can read, then the tasks' arguments.

    Kept apart so that arguments which cannot be loaded where the task runs (a module missing
    on that host, say) still leave the worker knowing which tasks to report as failed.
    """
    header = dumps((token, chunk.id, chunk.indices))
    return header + dumps((chunk.largs, chunk.lkwargs))


def encode_runnable(token: str, chunk: Chunk) -> tuple[Chunk, bytes | None, list[TaskFailure]]:
    """The chunk's file content, leaving out tasks whose arguments cannot be pickled.

    Returns the chunk that will run (maybe fewer tasks), its bytes (None when no task is left)
    and a failure for each task left out, naming the object that could not be pickled.
    """
    try:
        return chunk, encode_chunk(token, chunk), []
    except PICKLING_ERRORS:
        keep, failures = find_unpicklable(chunk)
    return keep, (encode_chunk(token, keep) if keep.indices else None), failures


def decode_chunk_header(data: bytes) -> tuple[str, int, list[int], io.BytesIO]:
    """The run's token, the chunk id and task indices; and the stream where the arguments are."""
    stream = io.BytesIO(data)
    token, chunk_id, indices = pickle.load(stream)
    return token, chunk_id, indices, stream


def decode_chunk(data: bytes) -> tuple[str, Chunk]:
    token, chunk_id, indices, stream = decode_chunk_header(data)
    largs, lkwargs = pickle.load(stream)
    return token, Chunk(chunk_id, indices, largs, lkwargs)


def decode_outcome(data: bytes, token: str) -> ChunkResult | None:
    """The chunk result in ``data``, or None if it was written by another run."""
    found_token, result = loads_result(data)
    if found_token != token or not isinstance(result, ChunkResult):
        return None
    return result


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so that readers see the whole file or no file, never a part of it."""
    target = os.fspath(path)
    tmp = f"{target}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):  # a part-written file keeps space a full disk lacks
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)


def create_local_run_dir(parent: str | None = None, prefix: str = "remotemap-") -> RunLayout:
    """A fresh private (0700) run directory with its subdirectories."""
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True, mode=0o700)
    root = tempfile.mkdtemp(prefix=prefix, dir=parent or None)  # mkdtemp makes it 0700
    layout = RunLayout(root)
    for sub in layout.subdirs():
        os.mkdir(sub, 0o700)
    return layout


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def exit_status_text(status: str) -> str:
    """Words for a worker status such as ``signal:9`` or ``exit:3``."""
    kind, _, number = status.partition(":")
    if kind == "signal":
        import signal

        try:
            name = signal.Signals(int(number)).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (signal {number})"
    if kind == "exit":
        return f"exited with code {number}"
    if kind == "timeout":
        return "was killed after exceeding its timeout"
    return f"ended abnormally ({status})"


def dump_meta(meta: dict[str, Any]) -> bytes:
    import json

    return json.dumps(meta, indent=2, sort_keys=True).encode()
