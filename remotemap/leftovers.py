"""Undoing what a task leaves behind in a process that runs other tasks after it.

A task may close stdout or stderr (``sys.stdout.close()``, ``os.close(1)``) or start processes
it never waits for. In a process that goes on running tasks (a ``local`` worker, the caller's
own process in ``serial``, a batch job running several chunks) the next task would then fail to
print, and the children would outlive the run. Linux only for the children (``/proc``,
``prctl``); elsewhere that part does nothing.

Imported by every worker: standard library only.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

_STDIO = (1, 2)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Stdio:
    """fds 1 and 2 and ``sys.stdout``/``sys.stderr`` as they were when made; :meth:`repair`
    puts back what a task closed or pointed elsewhere.

    The copies of the fds are taken once (when a session or worker starts), so checking after
    a chunk costs two ``fstat`` calls.
    """

    def __init__(self) -> None:
        self.saved: dict[int, tuple[int, tuple[int, int]]] = {}
        for fd in _STDIO:
            ident = _identity(fd)
            if ident is not None:
                copy = os.dup(fd)
                os.set_inheritable(copy, False)
                self.saved[fd] = (copy, ident)

    def repair(self) -> None:
        for fd, (copy, ident) in self.saved.items():
            if _identity(fd) != ident:
                with contextlib.suppress(OSError):
                    os.dup2(copy, fd)
        sys.stdout = _reopened(sys.stdout, 1)
        sys.stderr = _reopened(sys.stderr, 2)

    def close(self) -> None:
        for copy, _ in self.saved.values():
            with contextlib.suppress(OSError):
                os.close(copy)
        self.saved.clear()


def _reopened(stream: TextIO, fd: int) -> TextIO:
    """``stream`` if still open, else a new text stream on ``fd`` with its settings."""
    if stream is None or not getattr(stream, "closed", False):
        return stream
    raw = io.FileIO(fd, "w", closefd=False)
    line_buffering = bool(getattr(stream, "line_buffering", fd == 2))
    return io.TextIOWrapper(io.BufferedWriter(raw),
                            encoding=getattr(stream, "encoding", None) or "utf-8",
                            errors=getattr(stream, "errors", None) or "backslashreplace",
                            line_buffering=line_buffering, write_through=fd == 2)


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the parent of its descendants orphaned by their own parent's exit,
    so :func:`kill_children` finds grandchildren too. True when Linux agreed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return bool(prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except Exception:
        return False


def has_children() -> bool:
    """Whether this process has any child, running or ended: one system call, so the common
    case (none) costs a few microseconds where reading ``/proc`` costs tens. False where
    there is no ``/proc`` to list them (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def children() -> list[int]:
    """The pids of this process's children (every thread's), from ``/proc``."""
    pids: list[int] = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tids:
        try:
            fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY)
        except OSError:
            continue  # the thread ended meanwhile
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        finally:
            os.close(fd)
        pids += [int(p) for p in data.split()]
    return pids


def kill_children(rounds: int = 5) -> list[int]:
    """SIGKILL every child of this process and reap it; again for the grandchildren that come
    to this process (a subreaper) when their parent dies. Returns the pids killed."""
    killed: list[int] = []
    if not has_children():
        return killed
    for _ in range(rounds):
        pids = [p for p in children() if p not in killed]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        killed += pids
    _reap_orphans()
    return killed


def _reap_orphans() -> None:
    """Reap grandchildren that came to this subreaper already dead (zombies)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def exit_with_parent(thread_name: str, before_exit: Callable[[], object] | None = None
                     ) -> None:
    """Exit this process when its parent dies (even by SIGKILL, which leaves the parent no
    chance to stop it), instead of running on as an orphan: a daemon thread named
    ``thread_name`` looks twice a second. ``before_exit`` then undoes what the dead parent
    can no longer (its files)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        if before_exit is not None:
            with contextlib.suppress(BaseException):  # exit whatever it raised
                before_exit()
        os._exit(1)

    threading.Thread(target=watch, name=thread_name, daemon=True).start()
