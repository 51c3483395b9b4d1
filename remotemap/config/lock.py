"""One writer at a time for the config file: an ``flock`` on ``NAME.lock`` beside it.

The lock is on a file of its own because the config file is replaced (renamed over) on every
write: a lock on the old inode would not stop a writer that opened the new one. The lock file
holds the pid and host of the last process to take it, so a writer that gives up can say who
is in the way. It is left in place: deleting it would let two writers lock two different
inodes under the same name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from remotemap.errors import ConfigError

#: Seconds a writer waits for another one before giving up (a config edit takes milliseconds).
LOCK_TIMEOUT = 10.0
_POLL_FIRST, _POLL_MAX = 0.005, 0.1


def lock_path(path: Path) -> Path:
    """The lock file guarding the config file ``path`` (beside the real file of a symlink)."""
    target = path.resolve() if path.is_symlink() else path
    return target.with_name(target.name + ".lock")


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as well as the file says it ("process 123 on host"), or ""."""
    try:
        pid, _, host = lock.read_text(encoding="ascii").strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        return ""
    if not pid.isdigit():
        return ""  # the holder has not written its pid yet
    on_host = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {pid}{on_host}"


def _wait_for(fd: int, lock: Path, timeout: float) -> None:
    """Take an exclusive flock on ``fd``, polling so a stuck holder cannot hang us."""
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"cannot lock the file: {exc.strerror or exc}", lock) from None
        if time.monotonic() >= deadline:
            who = _holder(lock) or "another process"
            raise ConfigError(
                f"is locked by {who} (another `remotemap config` writing the config file?); "
                f"gave up after {timeout:g} s. Try again once it ends, or stop it",
                lock,
            )
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)


@contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Hold the config file ``path``'s lock for the block; yields the lock file's path.

    Read the file inside the block: a copy read before may already be out of date. Gives a
    ConfigError naming the lock file (and its holder's pid) after ``timeout`` seconds.
    """
    lock = lock_path(path)
    if not lock.parent.exists():
        lock.parent.mkdir(mode=0o700, parents=True)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open the lock file: {exc.strerror or exc}", lock) from None
    try:
        _wait_for(fd, lock, timeout)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode("ascii", "replace"), 0)
        yield lock
    finally:
        os.close(fd)  # closing drops the flock; a crash drops it too
