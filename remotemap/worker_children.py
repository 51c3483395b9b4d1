"""The fork server's children (``remotemap.worker``): how many run at once, and their signals.

A caller far from the server (``ssh``) pays a round trip between a chunk's ``done`` line and
the ``run`` line of the next: a slot idles for it, and for the outcome's download when the
caller reads it before starting the next. Tuned, the server runs at most ``SLOTS`` chunks at
once and holds the ``run`` lines beyond them, in order, starting the next the moment a child
is reaped; and a chunk's outcome of at most ``INLINE`` bytes follows its ``done`` line on the
protocol stream (``done CHUNK exit:0 SIZE`` and SIZE bytes, still sealed: the caller checks
them as it would the file), sparing the caller a download. An untuned server (a
``local_with_dumps`` caller) starts every ``run`` line at once and writes bare ``done`` lines.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import stat
import sys
from collections.abc import Callable

from remotemap.protocol import outcome_name
from remotemap.rundir import LocalRunDir

#: A chunk told to run: its id, its timeout in seconds, its checked content (preloading).
Waiting = tuple[int, float | None, bytes | None]


class Slots:
    """The chunks held until a slot frees, and how large an outcome goes inline."""

    def __init__(self) -> None:
        self.limit: int | None = None  # None: untuned, every chunk starts at once
        self.inline = 0
        self._held: collections.deque[Waiting] = collections.deque()

    def tune(self, words: list[str]) -> None:
        """``tune SLOTS INLINE``'s words after ``tune``; ValueError if malformed."""
        slots, inline = (int(w) for w in words)
        if slots < 1 or inline < 0:
            raise ValueError(f"tune {slots} {inline}")
        self.limit, self.inline = slots, inline

    def admit(self, running: int, chunk: Waiting) -> bool:
        """True if ``chunk`` may start now, with ``running`` children; else it is held."""
        if self.limit is None or (running < self.limit and not self._held):
            return True
        self._held.append(chunk)
        return False

    def release(self, running: int) -> list[Waiting]:
        """The held chunks that may start now that ``running`` children run."""
        free = 0 if self.limit is None else self.limit - running
        started = []
        while self._held and free > 0:
            started.append(self._held.popleft())
            free -= 1
        return started

    def clear(self) -> None:
        """Forget the held chunks (the caller left, or the run changed): they never start."""
        self._held.clear()

    def done_message(self, rundir: LocalRunDir, chunk_id: int, status: str) -> bytes:
        """The ``done`` line, with the outcome after it when it is to go inline and can be
        read here (else the caller downloads it, and reports what is wrong with it)."""
        line = f"done {chunk_id} {status}"
        if status != "exit:0" or self.inline <= 0:
            return f"{line}\n".encode()
        name = outcome_name(chunk_id)
        with contextlib.suppress(OSError):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=rundir.fd)
            with os.fdopen(fd, "rb") as f:
                size = os.fstat(fd).st_size
                if stat.S_ISREG(os.fstat(fd).st_mode) and size <= self.inline:
                    data = f.read(size + 1)
                    if len(data) == size:  # not rewritten while read
                        return f"{line} {size}\n".encode() + data
        return f"{line}\n".encode()


def kill_group(pid: int, sig: int) -> None:
    """Signal the child's process group (what the task spawned too), else the child alone."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass  # the child may not have made its group yet
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def load_prctl() -> Callable[..., int] | None:
    """libc's prctl, loaded once in the server (importing ctypes in every child costs ms)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        return None
    return prctl


_PR_SET_PDEATHSIG = 1


def die_with_parent(prctl: Callable[..., int] | None) -> None:
    """Ask Linux to SIGKILL this child if the server dies, so no task outlives its run."""
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
