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
import signal
import subprocess
import sys
import tempfile
import threading
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
from remotemap.protocol import exit_status_text
from remotemap.tasks import Chunk


def run_task(marker: str, chunk_id: int, indices: list[int], blob: bytes, arguments: bytes,
             sys_path: list[str], timeout: float | None, env: Mapping[str, str]) -> bytes:
    """The dask task: run one chunk in a child process; its ChunkResult, pickled."""
    from distributed import Event, get_worker

    worker = get_worker()
    address = worker.address
    chunk = Chunk(chunk_id, indices, [], [])
    started = Event(marker)
    if started.is_set():
        return dumps_result(lost_chunk_result(
            chunk, f"was lost with its dask worker (the scheduler then sent the chunk to "
                   f"{address}, which did not run it again: retries are remotemap's)",
            kind="lost"))
    started.set()
    with tempfile.TemporaryDirectory(prefix="remotemap-dask-") as tmp:
        payload = dumps((chunk_id, indices, blob, arguments, sys_path))
        return _run_in_child(chunk, Path(tmp), payload, timeout, env, address,
                             lambda: _still_wanted(worker, marker))


def _still_wanted(worker: Any, key: str) -> bool:
    """Whether the caller still wants task ``key``: a session that closes early (fail fast,
    Ctrl-C) cancels its futures, which the worker records in its own task states."""
    state = getattr(getattr(worker, "state", None), "tasks", {}).get(key)
    return state is not None and state.state not in ("cancelled", "released", "forgotten")


def _run_in_child(chunk: Chunk, tmp: Path, payload: bytes, timeout: float | None,
                  env: Mapping[str, str], address: str,
                  wanted: Callable[[], bool]) -> bytes:
    (tmp / "payload.pkl").write_bytes(payload)
    result = tmp / "result.pkl"
    with open(tmp / "output.log", "w+b") as log:
        # Its own session: the timeout kills the whole process group, the task's children too.
        child = subprocess.Popen(
            [sys.executable, "-m", "remotemap.backends.dask_worker", str(tmp)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **env}, start_new_session=True)
        try:
            code = _wait(child, timeout, wanted)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        log.seek(0)
        output = tail(log.read())
    if code is None:
        return dumps_result(lost_chunk_result(
            chunk, f"was killed after exceeding its timeout of {timeout:g} s (dask worker "
                   f"{address})", kind="timeout", log_tail=output))
    if code == 0 and result.exists():
        return result.read_bytes()
    status = f"signal:{-code}" if code < 0 else f"exit:{code}"
    return dumps_result(lost_chunk_result(
        chunk, f"{exit_status_text(status)} (dask worker {address})", log_tail=output))


def _wait(child: subprocess.Popen[bytes], timeout: float | None,
          wanted: Callable[[], bool]) -> int | None:
    """The child's exit code, or None once it ran past ``timeout`` or nobody wants it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        try:
            return child.wait(max(left, 0))
        except subprocess.TimeoutExpired:
            if (deadline is not None and time.monotonic() >= deadline) or not wanted():
                return None


def _follow_parent() -> None:
    """Exit when the dask worker dies (even by SIGKILL), instead of running on unseen."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="remotemap-dask-parent", daemon=True).start()


def _child(tmp: Path) -> None:
    """The child process: run the chunk, write its result where the task reads it."""
    _follow_parent()
    chunk_id, indices, blob, arguments, sys_path = loads((tmp / "payload.pkl").read_bytes())
    try:
        # The caller's sys.path first: a module it imported from a notebook's directory.
        sys.path[:0] = [p for p in sys_path if p not in sys.path]
        function = loads(blob)
        largs, lkwargs = loads(arguments)
        chunk = Chunk(chunk_id, indices, largs, lkwargs)
    except Exception as exc:
        data = dumps_result(chunk_failed(Chunk(chunk_id, indices, [], []), exc))
    else:
        data = dumps_result(run_chunk(function, chunk))
    partial = tmp / "result.part"
    partial.write_bytes(data)
    partial.rename(tmp / "result.pkl")  # whole or absent: a crash mid-write leaves no result


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
