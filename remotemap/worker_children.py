"""The fork server's children (``remotemap.worker``): how many run at once, and their signals.

A caller far from the server (``ssh``) pays a round trip between a chunk's ``done`` line and
the ``run`` line of the next: a slot idles for it, and for the outcome's download when the
caller reads it before starting the next. Tuned, the server runs at most ``SLOTS`` chunks at
once and holds the ``run`` lines beyond them, in order, starting the next the moment a child
is reaped; and a chunk's outcome of at most ``INLINE`` bytes follows its ``done`` line on the
protocol stream (``done CHUNK exit:0 SIZE`` and SIZE bytes, still sealed: the caller checks
them as it would the file), sparing the caller a download. An untuned server (a
``local_with_dumps`` caller) starts every ``run`` line at once and writes bare ``done`` lines.

A held chunk's child is forked when the chunk is held, while the others run: it sets itself
up (its group, its log) and waits for one byte on a pipe of its own, which the server writes
when a slot frees. A fork and a child's set-up (milliseconds on a loaded host, at the very
moment the caller's traffic for the chunk that ended arrives too) are off the slot's idle
time; the held chunk's timeout starts with that byte. A standby child that dies before it
is told to go is reported like any child, and its chunk is not started again.
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
#: A held chunk let go: its id, its timeout, its content, its standby child's pid (or None).
Released = tuple[int, float | None, bytes | None, int | None]


class Slots:
    """The chunks held until a slot frees, and how large an outcome goes inline."""

    def __init__(self) -> None:
        self.limit: int | None = None  # None: untuned, every chunk starts at once
        self.inline = 0
        self._held: collections.deque[Waiting] = collections.deque()
        self._standby: dict[int, tuple[int, int]] = {}  # chunk -> (its child, its go pipe)

    def tune(self, words: list[str]) -> None:
        """``tune SLOTS INLINE``'s words after ``tune``; ValueError if malformed."""
        slots, inline = (int(w) for w in words)
        if slots < 1 or inline < 0:
            raise ValueError(f"tune {slots} {inline}")
        self.limit, self.inline = slots, inline

    def admit(self, children: int, chunk: Waiting) -> bool:
        """True if ``chunk`` may start now, the server having ``children``; else it is held
        (the server then forks its standby child, :meth:`stand_by`)."""
        if self.limit is None or (children - len(self._standby) < self.limit
                                  and not self._held):
            return True
        self._held.append(chunk)
        return False

    def stand_by(self, chunk_id: int, pid: int, go: int) -> None:
        """Held ``chunk_id``'s child ``pid`` waits for a byte on the pipe ``go`` writes to."""
        self._standby[chunk_id] = (pid, go)

    def release(self, children: int) -> list[Released]:
        """The held chunks that start now that the server has ``children``: a standby child
        is told to go here; a chunk without one is for the server to fork."""
        free = 0 if self.limit is None else self.limit - (children - len(self._standby))
        started: list[Released] = []
        while self._held and free > 0:
            chunk_id, timeout, data = self._held.popleft()
            pid, go = self._standby.pop(chunk_id, (None, -1))
            if go >= 0:
                with contextlib.suppress(OSError):  # gone meanwhile: reaped and reported
                    os.write(go, b"g")
                os.close(go)
            started.append((chunk_id, timeout, data, pid))
            free -= 1
        return started

    def lost(self, pid: int) -> None:
        """Child ``pid`` ended: if it was a standby one, its chunk is not to start again."""
        for chunk_id, (standing, go) in list(self._standby.items()):
            if standing == pid:
                del self._standby[chunk_id]
                os.close(go)
                self._held = collections.deque(c for c in self._held if c[0] != chunk_id)

    def go_pipes(self) -> list[int]:
        """The standby children's go pipes, for a new child to close."""
        return [go for _, go in self._standby.values()]

    def clear(self) -> None:
        """Forget the held chunks (the caller left, or the run changed): they never start;
        their standby children, stopped with the others, read the end of their pipe."""
        self._held.clear()
        for _, go in self._standby.values():
            os.close(go)
        self._standby.clear()

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


def wait_to_go(go: tuple[int, int], others: list[int]) -> None:
    """In a standby child: wait for the server's byte; exit if its pipe ends without one (the
    run was stopped). ``others``: other children's pipes, not this one's to hold open."""
    for fd in (go[1], *others):
        os.close(fd)
    if os.read(go[0], 1) != b"g":
        os._exit(0)
    os.close(go[0])
