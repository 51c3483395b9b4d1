"""Moving whole files and byte strings between this machine and an SSH host.

The four functions here are the one way the rest of remotemap moves file contents:

- :func:`put_file` / :func:`get_file`: a local file to a remote path and back;
- :func:`put_bytes` / :func:`get_bytes`: the same for data held in memory.

A file written on either side appears whole or not at all: it is written under a temporary
name in the same directory, then renamed over the target. Remote files are made ``mode``
(0600 by default) before any byte is written. Errors are ``OSError`` subclasses
(``FileNotFoundError``, ``PermissionError``...) naming ``user@host:port:path`` for the remote
side, or :class:`~remotemap.ssh.errors.SSHError` when the link itself fails.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from typing import IO, TYPE_CHECKING

from remotemap.ssh.quoting import remote_path

if TYPE_CHECKING:
    from remotemap.ssh.connection import Connection
    from remotemap.ssh.hosts import PathArg

#: Bytes per SFTP read or write request: the most OpenSSH's sftp-server answers in one go.
SFTP_BLOCK = 32768


def temp_name(path: str) -> str:
    """A fresh temporary name beside ``path`` (same directory: the rename is atomic)."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def put_file(conn: Connection, local: PathArg, remote: str, *, mode: int = 0o600) -> None:
    """Copy the local file ``local`` to ``remote`` on the host (atomically, made ``mode``)."""
    with open(local, "rb") as source:
        _sftp_put(conn, source, remote_path(remote), mode)


def get_file(conn: Connection, remote: str, local: PathArg) -> None:
    """Copy the remote file ``remote`` to the local path ``local`` (atomically: a local
    temporary file renamed over ``local``; made 0600 like every file remotemap writes)."""
    target = os.fspath(local)
    temp = temp_name(target) if "/" in target else temp_name(f"./{target}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            _sftp_get(conn, remote_path(remote), sink)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def put_bytes(conn: Connection, remote: str, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``remote`` on the host (atomically, made ``mode``)."""
    conn.put_bytes(remote, data, mode)


def get_bytes(conn: Connection, remote: str) -> bytes:
    """The content of the remote file ``remote``."""
    return conn.get_bytes(remote)


def _sftp_put(conn: Connection, source: IO[bytes], target: str, mode: int) -> None:
    temp = temp_name(target)
    with conn._link_errors(f"upload of {target}"), conn._sftp_lock:
        sftp = conn.sftp()
        try:
            with sftp.open(temp, "wb") as f:
                f.chmod(mode)
                f.set_pipelined(True)
                while block := source.read(SFTP_BLOCK * 32):
                    f.write(block)
            sftp.posix_rename(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                sftp.remove(temp)
            raise conn._file_error(exc, target) from exc


def _sftp_get(conn: Connection, target: str, sink: IO[bytes]) -> None:
    with conn._link_errors(f"download of {target}"), conn._sftp_lock:
        try:
            with conn.sftp().open(target, "rb") as f:
                f.prefetch()
                while block := f.read(SFTP_BLOCK * 32):
                    sink.write(block)
        except OSError as exc:
            raise conn._file_error(exc, target) from exc
