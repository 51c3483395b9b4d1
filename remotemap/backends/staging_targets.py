"""Where staged inputs are written: a host over SSH (``ssh`` mode, a ``cluster`` submitting
host), or this machine's disk (a ``cluster`` whose shared directory is here).

A target does five small things, so :mod:`remotemap.backends.staging` decides what to send
the same way for both: tell a file's size and mtime, make a private folder, send one file
(resuming a part that arrived), remove a tree, and say what a relative folder is under.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from remotemap.ssh import Connection

Progress = Callable[[int], None]


class Target(Protocol):
    #: How messages name the place (a host, or "localhost").
    label: str

    def home(self) -> str:
        """The directory a relative staging folder is under."""

    def make_area(self, path: str) -> None:
        """Make the private staging area ``path`` (absolute), checked like a run directory."""

    def makedirs(self, path: str) -> None:
        """``path`` and its missing parents, private."""

    def state(self, path: str) -> tuple[int, int] | None:
        """``(size, mtime)`` of the regular file ``path``, None if there is none."""

    def send(self, local: str, path: str, progress: Progress) -> int:
        """Copy the local file to ``path`` (mtime kept); the bytes written."""

    def remove_tree(self, path: str) -> None:
        """Remove ``path`` and what is under it."""


class SSHTarget:
    """A host reached through an open connection; files go by SFTP."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.label = conn.spec.target

    def home(self) -> str:
        return self.conn.normalize(".")

    def make_area(self, path: str) -> None:
        from remotemap.ssh.safety import check_remote_parent, check_remote_private, remote_uid

        uid = remote_uid(self.conn)
        check_remote_parent(self.conn, path, uid)
        self.conn.makedirs_private(path)
        check_remote_private(self.conn, path, uid)

    def makedirs(self, path: str) -> None:
        self.conn.makedirs_private(path)

    def state(self, path: str) -> tuple[int, int] | None:
        from remotemap.ssh.sending import remote_state

        return remote_state(self.conn, path)

    def send(self, local: str, path: str, progress: Progress) -> int:
        from remotemap.ssh.sending import send_file

        return send_file(self.conn, local, path, progress=progress)

    def remove_tree(self, path: str) -> None:
        self.conn.remove_tree(path)


class LocalTarget:
    """This machine's disk (a cluster's shared directory seen from here)."""

    label = "localhost"

    def home(self) -> str:
        return os.path.expanduser("~")

    def make_area(self, path: str) -> None:
        from remotemap.integrity import check_private_dir
        from remotemap.rundir import prepare_parent

        prepare_parent(os.path.dirname(path))
        os.makedirs(path, mode=0o700, exist_ok=True)
        check_private_dir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    def state(self, path: str) -> tuple[int, int] | None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        return (info.st_size, int(info.st_mtime)) if os.path.isfile(path) else None

    def send(self, local: str, path: str, progress: Progress) -> int:
        part = f"{path}.part-{os.getpid()}"
        try:
            shutil.copy2(local, part)  # copy2: the mtime too, so an unchanged file is seen
            os.chmod(part, 0o600)
            os.replace(part, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        size = os.path.getsize(path)
        progress(size)
        return size

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)
