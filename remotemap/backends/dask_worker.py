"""The worker side of mode ``dask``: the dask task, and the process it runs a chunk in.

It runs in dask workers, so it imports the standard library and remotemap's worker-side
modules only; ``distributed`` is imported inside the task (a dask worker has it).

Each chunk runs in a child process of the dask worker, never in the worker's own thread:

- a task over its timeout is killed with its process group (dask cannot stop a running
  task's thread);
- a task that kills its process (``os._exit``, a segfault, the OOM killer) fails alone with
  its exit code or signal, instead of killing the dask worker, which the scheduler would answer
  by running the chunk again on the next worker, and the next;
- ``env=`` applies to that process only, and what the tasks leave running is killed with it.

The price is a Python start (~0.1 s) per chunk, which chunking spreads over many tasks.

A dask worker that dies mid-chunk (killed, out of memory) makes the scheduler run the chunk
again elsewhere. remotemap's driver owns retries, so that second attempt must not run the
tasks: a marker (a ``distributed.Event`` named after the session and the chunk), set when a
chunk starts, tells it the first attempt was lost, and it fails the tasks with kind "lost".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from remotemap.execution import (
    chunk_failed,
    dumps,
    dumps_result,
    loads,
    lost_chunk_result,
    run_chunk,
    tail,
)
from remotemap.leftovers import exit_with_parent
from remotemap.protocol import exit_status_text
from remotemap.tasks import Chunk


def run_task(marker: str, chunk_id: int, indices: list[int], blob: bytes, arguments: bytes,
             sys_path: list[str], timeout: float | None, env: Mapping[str, str]) -> list[bytes]:
    """The dask task: run one chunk in a child process; its ChunkResults, pickled (one, or
    one per task when a crash took the whole chunk and each task ran again alone)."""
    from distributed import Event, get_worker

    worker = get_worker()
    address = worker.address
    chunk = Chunk(chunk_id, indices, [], [])
    started = Event(marker)
    if started.is_set():
        return [dumps_result(lost_chunk_result(
            chunk, f"was lost with its dask worker (the scheduler then sent the chunk to "
                   f"{address}, which did not run it again: retries are remotemap's)",
            kind="lost"))]
    started.set()
    with tempfile.TemporaryDirectory(prefix="remotemap-dask-") as tmp:
        child = _Child(Path(tmp), (blob, arguments, sys_path), timeout, env, address,
                       lambda: _still_wanted(worker, marker))
        data, crashed = child.run(chunk, None)
        if not crashed or len(indices) == 1:
            return [data]
        # A task killed the chunk's process: run each task alone, so that only the one that
        # crashes fails (those that had finished run again, as in mode local).
        return [child.run(Chunk(chunk_id, [index], [], []), [k])[0]
                for k, index in enumerate(indices)]


def _still_wanted(worker: Any, key: str) -> bool:
    """Whether the caller still wants task ``key``: a session that closes early (fail fast,
    Ctrl-C) cancels its futures, which the worker records in its own task states."""
    state = getattr(getattr(worker, "state", None), "tasks", {}).get(key)
    return state is not None and state.state not in ("cancelled", "released", "forgotten")


class _Child:
    """Runs a chunk's tasks in a child process, in the task's private directory ``tmp``."""

    def __init__(self, tmp: Path, payload: tuple[bytes, bytes, list[str]],
                 timeout: float | None, env: Mapping[str, str], address: str,
                 wanted: Callable[[], bool]) -> None:
        self.tmp, self.payload, self.timeout, self.env = tmp, payload, timeout, env
        self.address, self.wanted = address, wanted

    def run(self, chunk: Chunk, positions: list[int] | None) -> tuple[bytes, bool]:
        """The chunk's result (its tasks at ``positions`` of the arguments, None: all), and
        whether its process died without giving one."""
        blob, arguments, sys_path = self.payload
        (self.tmp / "payload.pkl").write_bytes(
            dumps((chunk.id, chunk.indices, positions, blob, arguments, sys_path)))
        result = self.tmp / "result.pkl"
        result.unlink(missing_ok=True)
        (self.tmp / "started").unlink(missing_ok=True)
        code, output = self._spawn()
        if code is None:
            return dumps_result(lost_chunk_result(
                chunk, f"was killed after exceeding its timeout of {self.timeout:g} s (dask "
                       f"worker {self.address})", kind="timeout", log_tail=output)), False
        if code == 0 and result.exists():
            return result.read_bytes(), False
        status = f"signal:{-code}" if code < 0 else f"exit:{code}"
        return dumps_result(lost_chunk_result(
            chunk, f"{exit_status_text(status)} (dask worker {self.address})",
            log_tail=output)), True

    def _spawn(self) -> tuple[int | None, str]:
        with open(self.tmp / "output.log", "w+b") as log:
            # Its own session: killing its process group kills what the tasks started too.
            child = subprocess.Popen(
                [sys.executable, "-m", "remotemap.backends.dask_worker", str(self.tmp)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, start_new_session=True)
            try:
                code = _wait(child, self.timeout, self.wanted, self.tmp / "started")
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            log.seek(0)
            return code, tail(log.read())


def _wait(child: subprocess.Popen[bytes], timeout: float | None, wanted: Callable[[], bool],
          started: Path) -> int | None:
    """The child's exit code, or None once it ran past ``timeout`` or nobody wants it.

    The timeout counts from ``started`` (the child's tasks begin), not from the child's own
    start: a busy machine can take a second to start a Python, which is no task's doing.
    """
    deadline: float | None = None
    while True:
        if deadline is None and timeout is not None and started.exists():
            deadline = time.monotonic() + timeout
        step = 0.05 if timeout is not None and deadline is None else 0.5
        if deadline is not None:
            step = max(min(step, deadline - time.monotonic()), 0)
        try:
            return child.wait(step)
        except subprocess.TimeoutExpired:
            if (deadline is not None and time.monotonic() >= deadline) or not wanted():
                return None


def _child(tmp: Path) -> None:
    """The child process: run the chunk, write its result where the task reads it."""
    # The dask worker's death, even by SIGKILL (the OOM killer, a nanny's restart): its
    # TemporaryDirectory is then never removed, so this process removes it before exiting.
    exit_with_parent("remotemap-dask-parent", lambda: shutil.rmtree(tmp, ignore_errors=True))
    payload = loads((tmp / "payload.pkl").read_bytes())
    chunk_id, indices, positions, blob, arguments, sys_path = payload
    try:
        # The caller's sys.path first: a module it imported from a notebook's directory.
        sys.path[:0] = [p for p in sys_path if p not in sys.path]
        function = loads(blob)
        largs, lkwargs = loads(arguments)
        if positions is not None:
            largs, lkwargs = [largs[k] for k in positions], [lkwargs[k] for k in positions]
        chunk = Chunk(chunk_id, indices, largs, lkwargs)
    except Exception as exc:
        data = dumps_result(chunk_failed(Chunk(chunk_id, indices, [], []), exc))
    else:
        (tmp / "started").touch()  # the timeout counts from here (see _wait)
        data = dumps_result(run_chunk(function, chunk))
    partial = tmp / "result.part"
    partial.write_bytes(data)
    partial.rename(tmp / "result.pkl")  # whole or absent: a crash mid-write leaves no result


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
