"""Whole files between this side and a host, for staging: send one (resuming a part that
already arrived), fetch one, and ask what the host holds.

Kept apart from :mod:`remotemap.ssh.connection` so the transfer itself can change there
without touching what staging asks of it: these are the only calls staging makes. Large files
go through the OpenSSH lane of :mod:`remotemap.ssh.transfer` (same rules, same fallback to
SFTP), resumed there too: the host appends to the part, ``ssh`` reads the file from the
part's size on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from remotemap.ssh.errors import SSHError
from remotemap.ssh.quoting import remote_path
from remotemap.ssh.transfer import FAST_LANE_MIN_BYTES, _lane, _lane_failed

if TYPE_CHECKING:
    import paramiko

    from remotemap.ssh.connection import Connection

log = logging.getLogger("remotemap.ssh")

#: Bytes read from the local file per SFTP write (writes are pipelined).
BLOCK = 1 << 20

# Run by the host's shell with the part's path as "$1": the lane's writer, made 0600 (umask)
# when new, appended to when resumed (ssh sends only what the part lacks).
_CREATE = 'umask 077 && exec cat > "$1"'
_APPEND = 'umask 077 && exec cat >> "$1"'


def remote_state(conn: Connection, path: str) -> tuple[int, int] | None:
    """``(size, mtime)`` of the remote regular file ``path``; None if there is none."""
    target = remote_path(path)
    with conn._link_errors(f"stat {target}"), conn._sftp_lock:
        try:
            attrs = conn.sftp().stat(target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise conn._file_error(exc, target) from exc
    if not stat.S_ISREG(attrs.st_mode or 0):
        return None
    return int(attrs.st_size or 0), int(attrs.st_mtime or 0)


def part_name(path: str, size: int, mtime_ns: int) -> str:
    """Where ``path`` is written until it is whole, named after the local file's size and
    mtime, so a later attempt resumes only a part of the very same version of the file."""
    return f"{path}.part-{size}-{mtime_ns}"


def send_file(conn: Connection, local: str, path: str, *,
              progress: Callable[[int], None] | None = None) -> int:
    """Copy the local file ``local`` to ``path`` on the host; the bytes sent.

    The bytes go to a part file first, renamed over ``path`` once whole and given the local
    file's mtime (so :func:`remote_state` can tell it is unchanged). A part left by a dropped
    link or a stop, for the same size and mtime of the local file, is resumed from its size:
    what arrived is not sent again. A file of ``FAST_LANE_MIN_BYTES`` or more goes through the
    OpenSSH lane when the host allows it (:mod:`remotemap.ssh.transfer`), any other by SFTP;
    a lane that fails leaves the rest to SFTP, which resumes the part the lane left. The local
    file is opened before anything happens on the host, so an OSError naming ``local`` is
    this side's (missing, unreadable); the host's errors name ``host:path``. ``progress(n)``
    is called with the bytes sent so far now and then (it may raise, to stop the transfer:
    the part is kept for a later attempt)."""
    target = remote_path(path)
    with open(local, "rb") as source:
        info = os.fstat(source.fileno())
        part = part_name(target, info.st_size, info.st_mtime_ns)
        with conn._link_errors(f"upload of {local} to {target}"):
            sent = None
            if info.st_size >= FAST_LANE_MIN_BYTES:
                sent = _lane_append(conn, source, part, info.st_size, progress)
            with conn._sftp_lock:
                sftp = conn.sftp()
                try:
                    if sent is None:
                        sent = _write_part(sftp, source, part, info.st_size, progress)
                    else:
                        _check_whole(conn, sftp, part, info.st_size)
                    sftp.utime(part, (int(info.st_atime), int(info.st_mtime)))
                    sftp.posix_rename(part, target)
                except OSError as exc:
                    raise conn._file_error(exc, target) from exc
    return sent


def _offset(sftp: paramiko.SFTPClient, part: str, size: int) -> int:
    """The bytes of the file ``part`` holds already: its size, or 0 when there is none or when
    it is longer than the file (it cannot be a prefix of it: it is started again)."""
    try:
        offset = int(sftp.stat(part).st_size or 0)
    except FileNotFoundError:
        return 0
    return 0 if offset > size else offset


def _lane_append(conn: Connection, source: BinaryIO, part: str, size: int,
                 progress: Callable[[int], None] | None) -> int | None:
    """Append to ``part`` what it lacks of ``source`` through the OpenSSH lane; the bytes
    sent, or None when SFTP must do it (no lane, or the lane failed)."""
    lane = _lane(conn)
    if lane is None:
        return None
    with conn._sftp_lock:
        try:
            offset = _offset(conn.sftp(), part, size)
        except OSError as exc:
            raise conn._file_error(exc, part) from exc
    # ssh reads the file itself from this offset: the open file's offset is shared with it,
    # so where it stands tells how far ssh has read.
    source.seek(offset)
    fd = source.fileno()

    def poll() -> None:
        if progress is not None:
            progress(os.lseek(fd, 0, os.SEEK_CUR) - offset)

    script = _APPEND if offset else _CREATE
    try:
        lane.watch(["sh", "-c", script, "sh", part], stdin=source, poll=poll)
    except SSHError as exc:
        poll()  # a stop asked meanwhile ends the transfer here, not in SFTP
        _lane_failed(conn, lane, f"upload of {part}", exc)
        return None
    log.debug("%s: %s sent by ssh from byte %d on (%d bytes)", conn.spec.target, part,
              offset, size - offset)
    if progress is not None:
        progress(size - offset)
    return size - offset


def _check_whole(conn: Connection, sftp: paramiko.SFTPClient, part: str, size: int) -> None:
    """The part the lane wrote holds the file's size, or it goes (a writer of a dropped
    transfer may have been still appending) and the upload fails, naming it."""
    held = int(sftp.stat(part).st_size or 0)
    if held != size:
        with contextlib.suppress(OSError):
            sftp.remove(part)
        raise OSError(errno.EIO, f"{conn.spec.target}:{part} held {held} bytes after the "
                      f"upload, {size} expected (removed: the next attempt sends it whole)")


def _write_part(sftp: paramiko.SFTPClient, source: BinaryIO, part: str, size: int,
                progress: Callable[[int], None] | None) -> int:
    """Append to ``part`` what it lacks of ``source`` by SFTP."""
    offset = _offset(sftp, part, size)
    with sftp.open(part, "r+b" if offset else "wb") as f:
        f.chmod(0o600)
        f.set_pipelined(True)
        f.seek(offset)
        source.seek(offset)
        sent = 0
        while True:
            block = source.read(BLOCK)
            if not block:
                break
            f.write(block)
            sent += len(block)
            if progress is not None:
                progress(sent)
    return sent


def fetch_file(conn: Connection, path: str, local: str) -> int:
    """Copy the remote file ``path`` to ``local`` (written whole or not at all); its size."""
    target = remote_path(path)
    folder, name = os.path.split(os.path.abspath(local))
    temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    with conn._link_errors(f"download of {target}"), conn._sftp_lock:
        try:
            with open(temp, "wb") as sink:
                conn.sftp().getfo(target, sink)
            size = os.path.getsize(temp)
            os.replace(temp, local)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if exc.filename in (temp, local):
                raise
            raise conn._file_error(exc, target) from exc
    return size
