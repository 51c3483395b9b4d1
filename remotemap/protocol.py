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

The function, chunk and outcome files are sealed (``seal_file``): an HMAC tag made with the
run's secret key and the file's name in the run directory goes in front of the pickle, and
nothing is unpickled before its tag checks out (``unseal_file``). The key never sits in the run
directory: the caller hands it to a worker server on its stdin (``key HEX [DEV INO]``, the
first line) and to a batch job as a private key file named on its command line.

Paths are POSIX strings so the same layout names files on a remote host.

The worker side of the line protocol spoken over a worker server's stdin and stdout is also
fixed here: the caller sends ``run CHUNK [TIMEOUT]`` lines; the server answers ``ready PID
PYTHON VERSION CPUS`` once, then ``done CHUNK STATUS`` per chunk, STATUS being ``exit:N``,
``signal:N`` or ``timeout``.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import pickle
import posixpath
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remotemap.errors import TamperedFile, TaskFailure
from remotemap.execution import (
    PICKLING_ERRORS,
    dumps,
    dumps_result,
    find_unpicklable,
    loads_result,
)
from remotemap.integrity import TAG_SIZE, check_tag, file_key, seal, tag, unseal
from remotemap.rundir import LocalRunDir, write_and_close
from remotemap.tasks import Chunk, ChunkResult

FUNCTION = "function.pkl"
CHUNKS = "chunks"
OUTCOMES = "outcomes"
LOGS = "logs"
META = "run.json"
WORK = "work"
#: The subdirectories made with every run directory.
SUBDIRS = (CHUNKS, OUTCOMES, LOGS)


@dataclass(frozen=True)
class RunLayout:
    """The names of every file in one run directory."""

    root: str

    @property
    def function(self) -> str:
        return posixpath.join(self.root, FUNCTION)

    def name(self, path: str) -> str:
        """``path`` (one of this layout's) relative to the run directory."""
        return posixpath.relpath(path, self.root)

    @property
    def meta(self) -> str:
        return posixpath.join(self.root, META)

    def subdirs(self) -> list[str]:
        return [posixpath.join(self.root, d) for d in SUBDIRS]

    def chunk(self, chunk_id: int) -> str:
        return posixpath.join(self.root, chunk_name(chunk_id))

    def outcome(self, chunk_id: int) -> str:
        return posixpath.join(self.root, outcome_name(chunk_id))

    def workdir(self, index: int) -> str:
        """The working directory of task ``index`` when tasks run in their own directories."""
        return posixpath.join(self.root, WORK, str(index))

    def log(self, chunk_id: int) -> str:
        return posixpath.join(self.root, log_name(chunk_id))


def new_token() -> str:
    return secrets.token_hex(8)


def chunk_name(chunk_id: int) -> str:
    return posixpath.join(CHUNKS, f"{chunk_id:06d}.pkl")


def outcome_name(chunk_id: int) -> str:
    return posixpath.join(OUTCOMES, f"{chunk_id:06d}.pkl")


def outcome_chunk_id(path: str) -> int | None:
    """The chunk whose outcome file ``path`` is (any directory, the name ``outcome_name``
    gives); None for another name."""
    name = posixpath.basename(path)
    stem = name.removesuffix(".pkl")
    if stem.isdigit() and outcome_name(int(stem)) == posixpath.join(OUTCOMES, name):
        return int(stem)
    return None


def buffer_path(path: str, i: int) -> str:
    """The file of buffer ``i`` of the chunk or outcome file ``path`` (when out of band)."""
    return f"{path}.{i}.buf"


def log_name(chunk_id: int) -> str:
    return posixpath.join(LOGS, f"{chunk_id:06d}.log")


def seal_file(key: bytes, name: str, data: bytes) -> bytes:
    """``data`` sealed for the file ``name`` of the run (relative to its directory)."""
    return seal(file_key(key, name), data)


def seal_parts(key: bytes, name: str, data: bytes) -> tuple[bytes, bytes]:
    """What ``seal_file`` gives, as the tag and ``data`` to write one after the other."""
    return tag(file_key(key, name), data), data


def read_sealed(rundir: LocalRunDir, key: bytes, name: str) -> bytes:
    """The checked content of the sealed file ``name`` of a local run directory, as bytes of
    its own (no copy); FileNotFoundError if missing, TamperedFile if not sealed by the run."""
    parts = rundir.read_split(name, TAG_SIZE)
    if parts is None:
        raise FileNotFoundError(2, "no such file", rundir.path(name))
    check_tag(file_key(key, name), *parts, rundir.path(name))
    return parts[1]


def unseal_file(key: bytes, name: str, blob: bytes, path: str) -> memoryview:
    """The data sealed in ``blob``, read from ``path`` (the file ``name`` of the run);
    TamperedFile, naming ``path``, if it was not sealed by this run for this name."""
    return unseal(file_key(key, name), blob, path)


#: The run's key in a worker process (set by ``remotemap.worker``), for what its tasks read of
#: the run: a workflow step's prerequisites (``remotemap.workflow.remote_step``).
_worker_key: bytes | None = None


def set_worker_key(key: bytes) -> None:
    global _worker_key
    _worker_key = key


def worker_key() -> bytes:
    if _worker_key is None:
        raise RuntimeError("no run key: this is not a remotemap worker process")
    return _worker_key


#: Gives the buffers of an outcome, by their sizes in order: buffer ``i`` is the file
#: ``buffer_path(outcome, i)``; raises TamperedFile naming a file of another size.
BufferFetcher = Callable[[list[int]], list[Any]]
#: In front of an outcome whose large buffers are files of their own (``write_outcome_parts``):
#: then the length of a JSON line, that line (each value's buffer sizes), the pickle.
BUFFERS_MAGIC = b"remotemap-buffers\n"


def open_outcome(key: bytes, chunk_id: int, blob: bytes | None, token: str, path: str,
                 fetch: BufferFetcher | None = None) -> ChunkResult | None:
    """The verdict on chunk ``chunk_id``'s outcome file, read from ``path`` (``blob``: its
    bytes, None when there was no file). The one place an outcome's bytes become a result:

    - missing (``blob`` None): None, no result of this run;
    - tampered (cut short, sealed with another key, or another chunk's outcome put under this
      name): TamperedFile naming ``path``, and nothing unpickled;
    - sealed by this run's key but for another token (an earlier session's leftover): None;
    - else the chunk's result (a value that cannot be loaded here fails its own task, kind
      ``"pickling"``; see ``execution.loads_result``).

    Large buffers written beside it (out of band) come from ``fetch``, by default mapped from
    the files beside ``path``. They are raw data, never unpickled; their sizes are in the
    sealed outcome, so one cut short or grown is refused (TamperedFile naming it).
    """
    if blob is None:
        return None
    data = unseal_file(key, outcome_name(chunk_id), blob, path)
    if data[:len(BUFFERS_MAGIC)] != BUFFERS_MAGIC:
        return decode_outcome(data, token)
    start = len(BUFFERS_MAGIC) + 11
    end = start + int(bytes(data[len(BUFFERS_MAGIC):start]))
    sizes: list[list[int]] = json.loads(bytes(data[start:end]))
    flat = (fetch or local_buffers(path))([size for value in sizes for size in value])
    grouped = []
    for value in sizes:
        grouped.append(flat[:len(value)])
        flat = flat[len(value):]
    return decode_outcome(data[end:], token, grouped)


def write_outcome_parts(rundir: LocalRunDir, key: bytes, result: ChunkResult, token: str
                        ) -> tuple[bytes, bytes]:
    """The sealed outcome of ``result`` as parts to write, its large buffers written first as
    files beside it (for a caller that asked for them out of band: ``encode_chunk``). Without
    large buffers, the same outcome as ``seal_parts`` of ``dumps_result`` gives."""
    name = outcome_name(result.chunk_id)
    buffers: list[list[memoryview]] = []
    body = dumps_result(result, token, buffers)
    if not any(buffers):  # nothing large: the plain outcome, as for any caller
        return seal_parts(key, name, body)
    for i, raw in enumerate(b for value in buffers for b in value):
        rundir.write(buffer_path(name, i), raw)
    sizes = json.dumps([[b.nbytes for b in value] for value in buffers]).encode()
    data = b"%s%010d\n%s%s" % (BUFFERS_MAGIC, len(sizes), sizes, body)
    return seal_parts(key, name, data)


def local_buffers(path: str) -> BufferFetcher:
    """The buffers beside the local outcome file ``path``, mapped (copy-on-write)."""

    def fetch(sizes: list[int]) -> list[Any]:
        found: list[Any] = []
        for i, size in enumerate(sizes):
            try:
                f = open(buffer_path(path, i), "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:  # removed since: the sealed outcome lists it
                raise TamperedFile(buffer_path(path, i)) from None
            with f:
                if os.fstat(f.fileno()).st_size != size:
                    raise TamperedFile(buffer_path(path, i))
                found.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b"")
        return found

    return fetch


#: Pickles a chunk's arguments for a worker on this machine: the pickle, and the files that
#: its large buffers went to (``buffers.BufferSpill.pack_arguments``).
ArgumentPacker = Callable[[Chunk], tuple[bytes, list[str]]]


def encode_chunk(token: str, chunk: Chunk, pack: ArgumentPacker | None = None,
                 options: dict[str, Any] | None = None) -> bytes:
    """Two pickles back to back: a header any worker can read, then the tasks' arguments.

    Kept apart so that arguments which cannot be loaded where the task runs (a module missing
    on that host, say) still leave the worker knowing which tasks to report as failed. With
    ``pack``, large buffers go to files of their own, listed in the header: the header is in
    the sealed file, and the buffers are raw data that the worker maps, never unpickles.
    ``options`` (after the files; workers that know none ignore it): ``outcome_buffers``, to
    have the outcome's large buffers written as files beside it (``write_outcome_parts``);
    ``buffer_sizes``, the sizes of the files, checked before they are mapped.
    """
    files: list[str] = []
    if pack is None:
        arguments = dumps((chunk.largs, chunk.lkwargs))
    else:
        arguments, files = pack(chunk)
    # A list, as every version has sent: the host's worker may be an older remotemap.
    header: tuple[Any, ...] = (token, chunk.id, list(chunk.indices))
    if files or options:
        header += (files, options) if options else (files,)
    return dumps(header) + arguments


def encode_runnable(token: str, chunk: Chunk, pack: ArgumentPacker | None = None,
                    options: dict[str, Any] | None = None
                    ) -> tuple[Chunk, bytes | None, list[TaskFailure]]:
    """The chunk's file content, leaving out tasks whose arguments cannot be pickled.

    Returns the chunk that will run (maybe fewer tasks), its bytes (None when no task is left)
    and a failure for each task left out, naming the object that could not be pickled.
    """
    try:
        return chunk, encode_chunk(token, chunk, pack, options), []
    except PICKLING_ERRORS:
        keep, failures = find_unpicklable(chunk)
    data = encode_chunk(token, keep, pack, options) if keep.indices else None
    return keep, data, failures


#: Loads a chunk's arguments: ``(largs, lkwargs)``; raises as unpickling does.
ArgumentLoader = Callable[[], tuple[list[tuple[Any, ...]], list[dict[str, Any]]]]


def decode_chunk_header(data: bytes | memoryview
                        ) -> tuple[str, int, list[int], ArgumentLoader, dict[str, Any]]:
    """The run's token, the chunk id and task indices; how to load the arguments; the
    options (``encode_chunk``)."""
    stream = io.BytesIO(data)
    token, chunk_id, indices, *rest = pickle.load(stream)
    files: list[str] = rest[0] if rest else []
    options: dict[str, Any] = rest[1] if len(rest) > 1 and isinstance(rest[1], dict) else {}

    def arguments() -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        buffers = map_buffer_files(files, options.get("buffer_sizes"))
        loaded: tuple[list[tuple[Any, ...]], list[dict[str, Any]]] = pickle.load(
            stream, buffers=buffers)
        return loaded

    return token, chunk_id, indices, arguments, options


def decode_chunk(data: bytes | memoryview) -> tuple[str, Chunk]:
    token, chunk_id, indices, arguments, _ = decode_chunk_header(data)
    largs, lkwargs = arguments()
    return token, Chunk(chunk_id, indices, largs, lkwargs)


def map_buffer_files(paths: list[str], sizes: list[int] | None = None) -> list[mmap.mmap]:
    """The files of a chunk's large buffers, mapped copy-on-write: the arrays they become are
    writable, and nothing is copied until a task writes to one. With ``sizes`` (from the
    sealed header), a file of another size is refused: TamperedFile naming it."""
    buffers = []
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            if sizes is not None and os.fstat(f.fileno()).st_size != sizes[i]:
                raise TamperedFile(path)
            buffers.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
    return buffers


def decode_outcome(data: bytes | memoryview, token: str, buffers: list[list[Any]] | None = None
                   ) -> ChunkResult | None:
    """The chunk result in ``data`` (already unsealed), or None if it was written by another
    run. Only ``open_outcome`` calls it on a file's bytes: use that."""
    found_token, result = loads_result(data, buffers)
    if found_token != token or not isinstance(result, ChunkResult):
        return None
    return result


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so that readers see the whole file or no file, never a part of it."""
    target = os.fspath(path)
    tmp = f"{target}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    write_and_close(fd, [data], lambda: os.unlink(tmp))
    os.replace(tmp, target)


def create_local_run_dir(parent: str | None = None, prefix: str = "remotemap-"
                         ) -> tuple[RunLayout, LocalRunDir]:
    """A fresh private (0700) run directory with its subdirectories, and the descriptor to
    reach it by; UnsafePath if ``parent`` lets another user replace it."""
    run = LocalRunDir.create(parent, SUBDIRS, prefix)
    return RunLayout(run.root), run


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
