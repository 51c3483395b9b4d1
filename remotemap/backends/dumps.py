"""``local_with_dumps``: one OS process per task; function, arguments and outcome cross as files.

A worker server (``python -m remotemap.worker serve``) is started once with this interpreter;
it loads the function, then forks a child per task. A task that crashes its process fails
alone, with the exit code or signal, and the fork costs milliseconds where a fresh interpreter
per task would cost tens of them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.local_options import LOCAL_WITH_DUMPS
from remotemap.buffers import BufferSpill
from remotemap.config import SHARED_BY_ENV, resolve_n_jobs, shared_by
from remotemap.errors import FailureKind, TamperedFile, TaskFailure
from remotemap.execution import (
    failure_from_exception,
    lost_chunk_result,
    pickle_function,
    tail,
)
from remotemap.integrity import check_same_dir, new_key
from remotemap.protocol import (
    FUNCTION,
    ArgumentPacker,
    chunk_name,
    create_local_run_dir,
    encode_runnable,
    exit_status_text,
    log_name,
    new_token,
    open_outcome,
    outcome_name,
    seal_file,
    seal_parts,
)
from remotemap.server_client import ServerInfo, WorkerServer, WorkerServerGone, parse_done
from remotemap.tasks import Chunk, ChunkResult
from remotemap.worker import OUTCOME_UNWRITABLE_EXIT, SYS_PATH_ENV

log = logging.getLogger("remotemap")


def _exited_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether ``proc`` ended within ``seconds``; waits on a pidfd, so the caller learns it
    at once rather than at ``Popen.wait``'s next poll (up to 50 ms later)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or already reaped
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], seconds)
    finally:
        os.close(pidfd)
    return bool(readable)


def unwritable_chunk(chunk: Chunk, path: str, exc: OSError,
                     failures: list[TaskFailure]) -> ChunkResult:
    """Every task of ``chunk`` fails because its file could not be written to ``path``."""
    for index in chunk.indices:
        failure = failure_from_exception(index, exc, kind="lost")
        failures.append(dataclasses.replace(
            failure, message=f"task {index} could not be written to {path}: {exc}"))
    return ChunkResult(chunk.id, failures=failures)


class DumpsBackend(Backend):
    name = "local_with_dumps"
    config_section = LOCAL_WITH_DUMPS

    def open(self, function: Callable[..., Any], options: TaskOptions) -> DumpsSession:
        return DumpsSession(
            pickle_function(function),
            options,
            n_jobs=(n_jobs := resolve_n_jobs(self.settings.get("n_jobs", 0))),
            ahead=n_jobs,
            temp_dir=self.settings.get("temp_dir") or None,
            keep_files=bool(self.settings.get("keep_files")),
            preload=bool(self.settings.get("preload", True)),
        )


class _FdLines:
    """Complete lines from a pipe, read without blocking once ``select`` says there is data."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def feed(self) -> None:
        data = os.read(self.fd, 65536)
        self.eof = self.eof or not data
        self.buffer += data

    def pop(self) -> bytes | None:
        line, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            return None
        self.buffer = rest
        return line + b"\n"

    def readline(self) -> bytes:
        """Blocking: the next line, or b"" at end of file."""
        while (line := self.pop()) is None:
            if self.eof:
                return b""
            self.feed()
        return line


class DumpsSession(Session):
    """A local worker server and its run directory; at most ``n_jobs`` tasks at a time.

    With ``ahead``, that many more chunks are written while ``n_jobs`` run, and each starts
    the moment a running one ends: writing a chunk's arguments (15 ms for 50 MB) no longer
    waits for a slot. Without, every chunk submitted starts at once (``local`` sends its tasks
    with a timeout here, as many as its own capacity)."""

    def __init__(self, function_blob: bytes, options: TaskOptions, *, n_jobs: int,
                 temp_dir: str | None = None, keep_files: bool = False,
                 preload: bool = True, ahead: int = 0) -> None:
        self.options = options
        self.preload = preload
        self.n_jobs = n_jobs
        self.capacity = n_jobs + ahead
        self.run_limit = n_jobs if ahead else None
        #: Chunks written and waiting for a slot (only with ``ahead``), oldest first.
        self.waiting: collections.deque[int] = collections.deque()
        self.started = 0  # chunks sent to the server that it has not reported done
        self.keep_files = keep_files
        self.token = new_token()
        #: The run's secret: it seals every file of the run and never goes to disk.
        self.key = new_key()
        # Every file of the run is reached through this descriptor, never by its path again.
        self.layout, self.rundir = create_local_run_dir(temp_dir)
        # Large buffers (array data) go to files of their own in /dev/shm, mapped by the task's
        # process: not copied into the sealed chunk file, hashed, written, read and hashed
        # again (the HMAC alone ran at ~400 MB/s). Kept files stay self-contained instead.
        self.spill = None if keep_files else BufferSpill()
        log.debug("local_with_dumps run directory: %s", self.layout.root)
        self._seq = itertools.count()
        self.running: dict[int, Chunk] = {}  # file number -> chunk
        self.ready: list[ChunkResult] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: WorkerServer | None = None
        self.lines: _FdLines | None = None
        #: What the server said when it was ready; None until its ready line was read.
        self.info: ServerInfo | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        try:
            self.rundir.write(FUNCTION, seal_file(self.key, FUNCTION, function_blob))
        except BaseException:
            self.close()
            raise

    # -- the server ---------------------------------------------------------------------------

    def _start(self) -> WorkerServer:
        """Start the server, without waiting for it: it boots (~0.1-0.2 s: an interpreter,
        the worker's imports, the function) while the first chunks are written, and its
        ready line is read before the first ``done`` line (:meth:`_is_ready`)."""
        # A server starts by the directory's name: refuse one put in the place of ours.
        check_same_dir(self.layout.root, self.rundir.identity)
        env = {**os.environ, **self.options.env, SYS_PATH_ENV: json.dumps(sys.path),
               SHARED_BY_ENV: shared_by(self.n_jobs)}  # for calls made inside tasks
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remotemap.worker", "serve", self.layout.root,
             *([] if self.preload else ["--no-preload"]),
             *([] if self.keep_files else ["--remove-orphaned"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            # Its own session: a Ctrl-C at the terminal reaches only the caller, which then
            # stops the server in order instead of every process dying at once.
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # The key through the pipe, never argv, the environment or a file; the identity so
        # that the server too refuses a directory put in the place of ours.
        dev, ino = self.rundir.identity
        with contextlib.suppress(OSError):  # a server that died at once says so below
            self.proc.stdin.write(f"key {self.key.hex()} {dev} {ino}\n".encode())
            self.proc.stdin.flush()
        self.lines = _FdLines(self.proc.stdout.fileno())
        self.server = WorkerServer(self.proc.stdin, self.lines)
        self.info = None
        return self.server

    def _is_ready(self) -> bool:
        """Whether the server's ready line was read; read now if it is there. Raises
        WorkerServerGone if the server ended or said something else: it did not start."""
        if self.info is None:
            assert self.lines is not None and self.server is not None
            if b"\n" not in self.lines.buffer and not self.lines.eof:
                return False
            self.info = self.server.wait_ready()
        return True

    def _stop_server(self) -> None:
        """Close the server's stdin (it then stops its children) and wait; kill if it lingers."""
        proc, self.proc, self.server, self.lines = self.proc, None, None, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):  # the run's files are ours to remove
            if proc.stdin is not None:
                proc.stdin.write(b"close\n")
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if not _exited_within(proc, 2):
            proc.kill()
        proc.wait()

    # -- Session --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self.running) + len(self.ready)

    def submit(self, chunk: Chunk) -> None:
        number = next(self._seq)
        if self.server is None:
            self._start()  # first: the server boots while the chunk is written
        staged, failed = self.stage(number, chunk)
        if failed is not None:
            self.ready.append(failed)
        if staged is None:
            return
        self.running[number] = staged
        self.waiting.append(number)
        self._send()

    def _send(self) -> None:
        """Start the waiting chunks that have a slot (a new server if the last one died)."""
        server = self.server or self._start()
        while self.waiting and (self.run_limit is None or self.started < self.run_limit):
            number = self.waiting.popleft()
            timeout = self.options.timeout
            try:
                server.run(number, None if timeout is None else timeout * len(
                    self.running[number]))
            except WorkerServerGone:
                self._is_ready()  # if it never started, raise with what it said instead
                raise
            self.started += 1

    def stage(self, number: int, chunk: Chunk) -> tuple[Chunk | None, ChunkResult | None]:
        """Write the chunk's file; tasks whose arguments cannot be pickled fail here."""
        pack: ArgumentPacker | None = None
        if self.spill is not None:
            spill = self.spill
            # Keyed by the file number: a chunk id may come back (a retry) before release.
            def pack(c: Chunk) -> tuple[bytes, list[str]]:
                return spill.pack_arguments(Chunk(number, c.indices, c.largs, c.lkwargs))
        chunk, data, failures = encode_runnable(self.token, chunk, pack)
        failed = ChunkResult(chunk.id, failures=failures) if failures else None
        if data is None:
            return None, failed
        self.rundir.unlink(outcome_name(number))
        self.rundir.unlink(log_name(number))
        name = chunk_name(number)
        try:
            self.rundir.write(name, *seal_parts(self.key, name, data))  # not joined: no copy
        except OSError as exc:  # a full disk, the run directory removed: these tasks fail
            return None, unwritable_chunk(chunk, self.layout.chunk(number), exc, failures)
        return chunk, failed

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        results, self.ready = self.ready, []
        if results or not self.running:
            return results
        if self.server is None:
            self._send()  # the last server died with chunks still waiting: on a new one
        assert self.lines is not None
        while True:
            while self._is_ready() and (line := self.lines.pop()) is not None:
                number, status = parse_done(line, "localhost")
                self.started -= 1
                results.append(self.collect(number, self.running.pop(number), status))
            if results:
                self._send()
                return results
            if self.lines.eof:
                return self._server_died()
            readable, _, _ = select.select([self.lines.fd, self._wake_r], [], [], timeout)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
                return results
            if not readable:
                return results
            self.lines.feed()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (pipe full), or closed
            os.write(self._wake_w, b"x")

    def collect(self, number: int, chunk: Chunk, status: str) -> ChunkResult:
        if self.spill is not None:
            self.spill.release(number)
        path = self.layout.outcome(number)
        blob = self.rundir.read(outcome_name(number))
        try:
            result = None if blob is None else open_outcome(
                self.key, number, blob, self.token, path)
        except TamperedFile as exc:  # never unpickled: the chunk's tasks fail, naming the file
            return lost_chunk_result(chunk, f"left an outcome that was refused: {exc}",
                                     kind="tampered")
        if result is not None and status == "exit:0":
            result.chunk_id = chunk.id
            return result
        log_tail = tail(self.rundir.read(log_name(number)) or b"")
        if status == "exit:0":  # the process ended normally but left no outcome of this run
            return lost_chunk_result(chunk, f"exited without writing its outcome {path}"
                                     f"{self._gone()}", kind="lost",
                                     log_tail=log_tail)
        kind: FailureKind = "timeout" if status == "timeout" else "crash"
        why = exit_status_text(status)
        if status == f"exit:{OUTCOME_UNWRITABLE_EXIT}":
            why += f": it could not write its outcome {path}{self._gone()}"
        return lost_chunk_result(chunk, why, kind=kind, log_tail=log_tail)

    def _gone(self) -> str:
        if self.rundir.is_still_at_root():
            return ""
        return f" (the run directory {self.layout.root} no longer exists)"

    def _server_died(self) -> list[ChunkResult]:
        """The server itself died (killed, out of memory): what it ran is lost; the next
        submission starts a new one."""
        code = self.proc.wait(timeout=5) if self.proc is not None else None
        why = f"was lost: the worker server ended (exit status {code})"
        started = [n for n in self.running if n not in self.waiting]  # the rest never ran
        results = [lost_chunk_result(self.running.pop(n), why, kind="lost") for n in started]
        if self.spill is not None:
            for number in started:  # its children may not have died yet: not reused
                self.spill.release(number, reuse=False)
        self.started = 0
        self._stop_server()
        return results

    def close(self) -> None:
        self._stop_server()
        self.running.clear()
        self.waiting.clear()
        if self.spill is not None:
            self.spill.close()
        self.ready = []
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.rundir.fd < 0:
            return  # closed already
        if self.keep_files:
            log.info("kept the run directory %s", self.layout.root)
        elif not self.rundir.remove():
            log.warning("%s is no longer the run directory made there (replaced while the run "
                        "went on): left as it is", self.layout.root)
        self.rundir.close()

