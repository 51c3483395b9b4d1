"""The first chunk of a ``local`` call, run in a child forked from the caller.

Starting loky's pool costs a fresh interpreter per worker, which then imports loky,
cloudpickle and remotemap: a few hundred milliseconds before the first result, most of the
cold start of a short call. A child forked from the caller has all of that already, and answers
in milliseconds. So the first chunk of a call goes to such a child while the pool starts for the
rest, or while a parked pool's workers are still starting. A process's first call of only that
chunk starts no pool; a second one does, so that calls made again and again find warm workers
(``local.LocalSession._fork``).

Fork is used only where it is safe: this process runs a single thread (a fork copies locks that
other threads may hold, and the child would hang on them) and no loky executor exists yet
(its threads and pipes would be copied half-alive). The caller never runs a task itself: the
child does, so a task that crashes still fails alone. The child runs the chunk as a pool worker
would (the same function blob, arguments through pickle, the same result records) and sends the
pickled result through a pipe; its exit status tells a crash apart from a result.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

#: Exit code of a forked child that could not send its result (a bug or a closed pipe).
_SEND_FAILED = 70


def fork_is_safe() -> bool:
    """Whether forking this process now is safe: one thread, and no loky executor."""
    if threading.active_count() != 1 or not hasattr(os, "fork"):
        return False
    reusable = sys.modules.get("loky.reusable_executor")
    return reusable is None or getattr(reusable, "_executor", None) is None


class ForkedChunk:
    """At most one chunk at a time, running in a forked child; its result bytes and status."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.fd = -1
        self.parts: list[bytes] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    @property
    def in_flight(self) -> int:
        return 0 if self.pid is None else 1

    def start(self, run: Callable[[], bytes]) -> None:
        """Fork a child that calls ``run`` and writes what it returns to a pipe."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _child(write_end, run)
        os.close(write_end)
        self.pid, self.fd, self.parts = pid, read_end, []

    def wait(self, timeout: float | None) -> tuple[bytes, str] | None:
        """The child's output and exit status (``exit:0``, ``signal:9``...) once it ended;
        None if ``timeout`` passed or :meth:`wake` was called first."""
        while self.pid is not None:
            readable, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
                return None
            if not readable:
                return None
            data = os.read(self.fd, 1 << 20)
            if data:
                self.parts.append(data)
                timeout = 0  # the rest may already be there; do not wait for it otherwise
                continue
            return b"".join(self.parts), self._reap()
        return None

    def _reap(self) -> str:
        assert self.pid is not None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped by a SIGCHLD handler of the caller's: status lost
            status = -1
        self.pid = None
        os.close(self.fd)
        self.fd, self.parts = -1, []
        if status == -1:
            return "lost:reaped elsewhere"
        if os.WIFSIGNALED(status):
            return f"signal:{os.WTERMSIG(status)}"
        return f"exit:{os.waitstatus_to_exitcode(status)}"

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (pipe full), or closed
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Kill a child still running (leaving early: fail fast, Ctrl-C), and free the pipes."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1


def _child(fd: int, run: Callable[[], bytes]) -> None:
    """In the forked child: run, send, and leave without the caller's exit handlers."""
    code = 0
    try:
        # Ctrl-C reaches the whole terminal's process group: the caller stops this child
        # itself (close), as it stops pool workers, instead of the task failing with it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _own_stdio()
        data = run()
        with open(fd, "wb", closefd=True) as pipe:
            pipe.write(data)
    except BaseException:  # anything: the exit status says it, the trace shows why
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        code = _SEND_FAILED
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _own_stdio() -> None:
    """Print to file descriptors 1 and 2, as a pool worker does, not through the caller's
    ``sys.stdout`` object (a test runner's capture, a notebook's stream) copied half-alive."""
    streams: list[Any] = []
    for fd in (1, 2):
        try:
            streams.append(io.TextIOWrapper(open(fd, "wb", closefd=False),  # noqa: SIM115
                                            line_buffering=True, errors="backslashreplace"))
        except OSError:
            streams.append(open(os.devnull, "w"))  # noqa: SIM115 - a closed descriptor
    sys.stdout, sys.stderr = streams
