"""``local_with_dumps``: one OS process per task; function, arguments and outcome cross as files.

A worker server (``python -m remotemap.worker serve``) is started once with this interpreter;
it loads the function, then forks a child per task. A task that crashes its process fails
alone, with the exit code or signal, and the fork costs milliseconds where a fresh interpreter
per task would cost tens of them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from remotemap.backends.base import Backend
from remotemap.config import resolve_n_jobs
from remotemap.execution import dumps, find_unpicklable, lost_chunk_result, tail
from remotemap.protocol import (
    RunLayout,
    create_local_run_dir,
    decode_outcome,
    encode_chunk,
    exit_status_text,
    new_token,
    read_file,
    write_atomic,
)
from remotemap.server_client import WorkerServer, WorkerServerGone
from remotemap.tasks import Chunk, ChunkResult, Results
from remotemap.worker import SYS_PATH_ENV

log = logging.getLogger("remotemap")


def pickle_function(function: Callable[..., Any]) -> bytes:
    """The function as bytes, or a TypeError that says which function and why."""
    try:
        return dumps(function)
    except Exception as exc:
        name = getattr(function, "__qualname__", type(function).__name__)
        raise TypeError(
            f"the function {name!r} cannot be pickled to send it to the workers: {exc}"
        ) from exc


class DumpsBackend(Backend):
    name = "local_with_dumps"

    def run(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        layout = create_local_run_dir(self.settings.get("run_dir") or None)
        log.debug("local_with_dumps run directory: %s", layout.root)
        runner = _LocalServerRun(layout, resolve_n_jobs(self.settings.get("n_jobs", 0)))
        try:
            write_atomic(layout.function, pickle_function(function))
            yield from runner.run(iter(chunks))
        finally:
            runner.stop()
            if self.settings.get("keep_files"):
                log.info("kept the run directory %s", layout.root)
            else:
                shutil.rmtree(layout.root, ignore_errors=True)


class _LocalServerRun:
    """Feeds chunks to a local worker server, at most ``n_jobs`` at a time."""

    def __init__(self, layout: RunLayout, n_jobs: int) -> None:
        self.layout = layout
        self.n_jobs = n_jobs
        self.token = new_token()
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: WorkerServer | None = None

    def start(self) -> WorkerServer:
        self.stop()
        env = {**os.environ, SYS_PATH_ENV: json.dumps(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remotemap.worker", "serve", self.layout.root],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own session: a Ctrl-C at the terminal reaches only the caller, which then
            # stops the server in order instead of every process dying at once.
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.server = WorkerServer(self.proc.stdin, self.proc.stdout)
        self.server.wait_ready()
        return self.server

    def run(self, chunks: Iterator[Chunk]) -> Results:
        server = self.start()
        in_flight: dict[int, Chunk] = {}
        while True:
            while len(in_flight) < self.n_jobs:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                chunk, failed = self.stage(chunk)
                if failed is not None:
                    yield failed
                if chunk.indices:
                    in_flight[chunk.id] = chunk
                    server.run(chunk.id)
            if not in_flight:
                return
            try:
                chunk_id, status = server.next_done()
            except WorkerServerGone as exc:
                # The server itself died (killed, out of memory): what it was running is lost;
                # a new server takes the chunks that were still to come.
                why = self._server_death(exc)
                for chunk in in_flight.values():
                    yield lost_chunk_result(chunk, why, kind="lost")
                in_flight.clear()
                server = self.start()
                continue
            yield self.collect(in_flight.pop(chunk_id), status)

    def stage(self, chunk: Chunk) -> tuple[Chunk, ChunkResult | None]:
        """Write the chunk's file; tasks whose arguments cannot be pickled fail here."""
        try:
            data = encode_chunk(self.token, chunk)
        except Exception:
            chunk, failures = find_unpicklable(chunk)
            data = encode_chunk(self.token, chunk)
            failed: ChunkResult | None = ChunkResult(chunk.id, failures=failures)
        else:
            failed = None
        for stale in (self.layout.outcome(chunk.id), self.layout.log(chunk.id)):
            if os.path.exists(stale):
                os.unlink(stale)
        if chunk.indices:
            write_atomic(self.layout.chunk(chunk.id), data)
        return chunk, failed

    def collect(self, chunk: Chunk, status: str) -> ChunkResult:
        path = self.layout.outcome(chunk.id)
        result = None
        if os.path.exists(path):
            result = decode_outcome(read_file(path), self.token)
        if result is not None and status == "exit:0":
            return result
        log_tail = (
            tail(read_file(self.layout.log(chunk.id)))
            if os.path.exists(self.layout.log(chunk.id))
            else ""
        )
        if status == "exit:0":  # the process ended normally but left no outcome of this run
            return lost_chunk_result(chunk, "exited without writing its outcome", kind="lost",
                                     log_tail=log_tail)
        kind = "timeout" if status == "timeout" else "crash"
        return lost_chunk_result(chunk, exit_status_text(status), kind=kind, log_tail=log_tail)

    def _server_death(self, exc: WorkerServerGone) -> str:
        code = self.proc.wait(timeout=5) if self.proc is not None else None
        return f"was lost: the worker server ended ({exc}; exit status {code})"

    def stop(self) -> None:
        """Close the server's stdin (it then stops its children) and wait; kill if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
