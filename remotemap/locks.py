"""One process at a time in a run directory: an flock on its ``lock`` file.

Two runs in one directory would each run the tasks the other is running and mix what they
store, so the second is refused with :class:`RunDirectoryBusy`, naming the process and host
that hold the lock (written into the lock file once it is taken). The lock goes with the
process: a run killed half-way (even by SIGKILL) leaves no stale lock behind.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import time
import weakref
from pathlib import Path

from remotemap.errors import RemotemapError
from remotemap.execution import this_host

LOCK = "lock"
#: How long a refused process waits for the holder to write who it is (it writes right after
#: taking the lock).
_HOLDER_WAIT = 1.0
#: The lock files this process holds open (descriptors).
_HELD: set[int] = set()


def _drop_in_child() -> None:
    """In a forked child (a process pool's worker, a task that forks), let go of the locks.

    An flock belongs to the open file, which a forked child shares: a child that outlives the
    run would keep its run directory locked. Its copies are pointed at /dev/null instead of
    closed, so the numbers stay valid for whatever closes them later."""
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD:
        os.dup2(null, fd)
    os.close(null)
    _HELD.clear()


def _close(fd: int) -> None:
    _HELD.discard(fd)
    os.close(fd)


os.register_at_fork(after_in_child=_drop_in_child)


class RunDirectoryBusy(RemotemapError, RuntimeError):
    """Another process runs in this run directory now."""


class DirectoryLock:
    """The lock of one run directory, held from :meth:`acquire` until :meth:`release`."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = root
        #: Words for the directory in the error, e.g. "the workflow run directory".
        self.what = what
        self._fd: int | None = None
        self._pid = os.getpid()

    def acquire(self, label: str = "") -> None:
        """Take the lock, or raise RunDirectoryBusy naming the process that has it."""
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirectoryBusy(f"{self.what} {self.root} is in use by {_holder(path)}; "
                                   "wait for it to end, or give another run_dir") from None
        now = datetime.datetime.now().isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": this_host(), "label": label, "since": now}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd, self._pid = fd, os.getpid()
        _HELD.add(fd)
        # A lock whose owner is dropped unreleased (a remote_imap never iterated) goes too.
        self._finalizer = weakref.finalize(self, _close, fd)

    def release(self) -> None:
        if self._fd is not None:
            if self._pid == os.getpid():  # not in a forked child, whose copy is /dev/null
                os.ftruncate(self._fd, 0)  # no one holds it now: forget who did
            self._finalizer()
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as the holder wrote it."""
    deadline = time.monotonic() + _HOLDER_WAIT
    while True:
        try:
            holder = json.loads(path.read_text())
            break
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                return "another process"
            time.sleep(0.02)
    label = f"{holder.get('label')}, " if holder.get("label") else ""
    return (f"process {holder.get('pid')} on {holder.get('host')} ({label}since "
            f"{holder.get('since')})")
