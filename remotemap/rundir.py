"""A run directory on this machine, reached through an open descriptor.

Every read and write of a run's files goes through the descriptor opened when the directory
was made (by the caller) or first entered (by the worker), never through its path again: a
directory renamed away and replaced by another under the same name is then simply not seen.
The directory is made only where no other user could rename it (see ``remotemap.integrity``),
and a worker enters only a directory that no other user can change, whose identity (device,
inode) is the one the caller made when the caller says which that is.

Standard library only: every worker imports this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from remotemap.errors import UnsafePath
from remotemap.integrity import check_parent_for_new_dir, check_private_dir, unsafe_reason

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def prepare_parent(parent: str) -> str:
    """``parent`` made (0700 where missing) and absolute; UnsafePath, before anything is made,
    if another user could rename away a directory made in it."""
    parent = os.path.abspath(os.path.expanduser(parent))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    check_parent_for_new_dir(existing)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    check_parent_for_new_dir(parent)
    return parent


def write_and_close(fd: int, parts: Iterable[bytes | memoryview],
                    remove: Callable[[], None]) -> None:
    """Write every part to ``fd`` and close it; if a write fails, also ``remove`` the file: a
    part-written file keeps the space a full disk lacks."""
    try:
        for data in parts:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            remove()
        raise
    os.close(fd)


class LocalRunDir:
    """An open run directory: ``root`` names it in messages, ``fd`` is how it is reached."""

    def __init__(self, root: str, fd: int) -> None:
        self.root = root
        self.fd = fd
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)

    @classmethod
    def create(cls, parent: str | None, subdirs: tuple[str, ...],
               prefix: str = "remotemap-") -> LocalRunDir:
        """A fresh private (0700) directory in ``parent`` (default: the system's temp dir),
        with ``subdirs``; UnsafePath if another user could rename it away there."""
        parent = prepare_parent(parent or tempfile.gettempdir())
        root = tempfile.mkdtemp(prefix=prefix, dir=parent)  # mkdtemp makes it 0700
        run = cls.enter(root)
        try:
            for sub in subdirs:
                os.mkdir(sub, 0o700, dir_fd=run.fd)
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def enter(cls, root: str, expected: tuple[int, int] | None = None) -> LocalRunDir:
        """The existing run directory ``root``: UnsafePath if another user could change it, or
        if it is not the directory ``expected`` (device, inode) names."""
        check_private_dir(root)
        try:
            fd = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            raise UnsafePath(root, f"{root} cannot be opened as a directory ({exc.strerror})"
                             ) from None
        try:
            st = os.fstat(fd)
            reason = unsafe_reason(root, st.st_mode, st.st_uid, me=os.geteuid(), ancestor=False)
            if reason is None and expected is not None and (st.st_dev, st.st_ino) != expected:
                reason = f"{root} is not the run directory that was made there (replaced)"
            if reason is not None:
                raise UnsafePath(root, reason)
        except BaseException:
            os.close(fd)
            raise
        return cls(root, fd)

    def path(self, name: str) -> str:
        """For messages: where ``name`` (relative to the run directory) is."""
        return os.path.join(self.root, name)

    def read(self, name: str) -> bytes | None:
        """The content of the file ``name``, or None if there is none."""
        with self._open_regular(name) as f:
            return None if f is None else f.read()

    def read_split(self, name: str, head: int) -> tuple[bytes, bytes] | None:
        """The file's first ``head`` bytes and the rest, each a bytes object of its own (the
        rest is not copied again to be unpickled); None if there is no such file."""
        with self._open_regular(name) as f:
            return None if f is None else (f.read(head), f.read())

    def read_at(self, name: str, offset: int, size: int) -> bytes | None:
        """``size`` bytes of the file from ``offset`` (fewer at its end); None if missing."""
        with self._open_regular(name) as f:
            return None if f is None else os.pread(f.fileno(), size, offset)

    @contextlib.contextmanager
    def _open_regular(self, name: str) -> Iterator[BinaryIO | None]:
        """``name`` opened for reading (None if missing); UnsafePath if not a regular file."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            yield None
            return
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePath(self.path(name), f"{self.path(name)} is not a regular file")
            yield f

    def write(self, name: str, *parts: bytes | memoryview, mode: int = 0o600) -> None:
        """Write ``parts`` one after the other to ``name``, so that readers see the whole file
        or none of it."""
        tmp = f"{name}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=self.fd)
        write_and_close(fd, parts, lambda: os.unlink(tmp, dir_fd=self.fd))
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def open_for_writing(self, name: str) -> int:
        """A new descriptor writing ``name`` from its start (a log)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, 0o600, dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def makedirs(self, name: str) -> None:
        """``name`` and its missing parents, 0700, under the run directory."""
        current = ""
        for part in name.split("/"):
            current = f"{current}/{part}" if current else part
            with contextlib.suppress(FileExistsError):
                os.mkdir(current, 0o700, dir_fd=self.fd)

    def listdir(self, name: str) -> list[str]:
        """The names in the subdirectory ``name`` ([] if there is none)."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return []
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def chdir(self, name: str) -> None:
        """Make the directory ``name`` (under the run directory) this process's working one."""
        fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        try:
            os.fchdir(fd)
        finally:
            os.close(fd)

    def is_still_at_root(self) -> bool:
        """Whether ``root`` still names this directory (not renamed away and replaced)."""
        try:
            st = os.lstat(self.root)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def remove(self) -> bool:
        """Delete the directory if ``root`` still names it; False when it was replaced (what
        is there now is not ours to delete)."""
        if not self.is_still_at_root():
            return False
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
