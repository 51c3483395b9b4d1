"""Moving whole files and byte strings between this machine and an SSH host.

The four functions here are the one way the rest of remotemap moves file contents:

- :func:`put_file` / :func:`get_file`: a local file to a remote path and back;
- :func:`put_bytes` / :func:`get_bytes`: the same for data held in memory;
- :func:`get_mapped`: a remote file of known size, mapped in memory (copy-on-write), with no
  copy besides the one ``ssh`` writes.

A file written on either side appears whole or not at all: it is written under a temporary
name in the same directory, then renamed over the target. Remote files are made ``mode``
(0600 by default) with no wider permission at any moment. Errors are ``OSError`` subclasses
(``FileNotFoundError``, ``PermissionError``...) naming ``user@host:port:path`` for the remote
side, :class:`~remotemap.ssh.errors.HostKeyError` when a host key is refused, or
:class:`~remotemap.ssh.errors.SSHError` when the link itself fails.

Files of :data:`FAST_LANE_MIN_BYTES` or more go through the system's OpenSSH client when it
reaches the host the way the connection does (:mod:`remotemap.ssh.openssh`), at ``scp``'s
speed; smaller ones, and every file of a host it cannot reach, go by SFTP on the connection.
When the OpenSSH lane fails for any reason but a refused host key, the transfer is done again
by SFTP, which then succeeds or raises the precise error; a lane that cannot log in is not
tried again on that connection.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import posixpath
import tempfile
import threading
import uuid
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from remotemap.ssh.errors import HostKeyError, SSHError
from remotemap.ssh.openssh import OpenSSH, unusable_reason
from remotemap.ssh.quoting import remote_path

if TYPE_CHECKING:
    import paramiko

    from remotemap.ssh.connection import Connection
    from remotemap.ssh.hosts import PathArg

log = logging.getLogger("remotemap.ssh")

#: Bytes per SFTP read or write request: the most OpenSSH's sftp-server answers in one go.
SFTP_BLOCK = 32768
#: Smaller files go by SFTP: a channel through the OpenSSH master costs a process start and a
#: few round trips (~10-30 ms), which SFTP's speed makes up for only on larger files.
FAST_LANE_MIN_BYTES = 1 << 20

# Run by the host's shell with the temporary name, the target and the mode as "$1" "$2" "$3":
# created 0600 (umask), filled, given its mode, renamed; on any failure the temporary goes.
_PUT_SCRIPT = ('umask 077 && cat > "$1" && chmod "$3" -- "$1" && mv -f -- "$1" "$2" '
               '|| { rm -f -- "$1"; exit 1; }')


def temp_name(path: str) -> str:
    """A fresh temporary name beside ``path`` (same directory: the rename is atomic)."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def put_file(conn: Connection, local: PathArg, remote: str, *, mode: int = 0o600) -> None:
    """Copy the local file ``local`` to ``remote`` on the host (atomically, made ``mode``)."""
    target = remote_path(remote)
    with open(local, "rb") as source:
        if os.fstat(source.fileno()).st_size >= FAST_LANE_MIN_BYTES and _lane_put(
            conn, target, mode, source
        ):
            return
        source.seek(0)
        _sftp_put(conn, source, target, mode)


def get_file(conn: Connection, remote: str, local: PathArg) -> None:
    """Copy the remote file ``remote`` to the local path ``local`` (atomically: a local
    temporary file renamed over ``local``; its permissions those of any new file, from the
    umask, as ``cp`` or ``scp`` would make it)."""
    target = os.fspath(local)
    temp = temp_name(target if os.sep in target else os.path.join(os.curdir, target))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as sink:
            _get(conn, remote_path(remote), sink)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def put_bytes(conn: Connection, remote: str,
              data: bytes | memoryview | Sequence[bytes | memoryview], *,
              mode: int = 0o600) -> None:
    """Write ``data`` to ``remote`` on the host (atomically, made ``mode``). ``data`` may be
    parts written one after the other, e.g. a seal and a large payload, to spare joining them."""
    parts = [data] if isinstance(data, (bytes, memoryview)) else list(data)
    large = sum(memoryview(p).nbytes for p in parts) >= FAST_LANE_MIN_BYTES
    if large and _lane(conn) is not None and _lane_put_parts(conn, remote_path(remote), mode,
                                                             parts):
        return
    conn.put_bytes(remote, b"".join(parts), mode)


def get_bytes(conn: Connection, remote: str) -> bytes:
    """The content of the remote file ``remote``."""
    with _scratch() as sink:
        _get(conn, remote_path(remote), sink)
        sink.seek(0)
        return sink.read()


def get_mapped(conn: Connection, remote: str, size: int) -> mmap.mmap | bytes:
    """The remote file ``remote``, expected to hold ``size`` bytes, mapped copy-on-write from
    an anonymous file (``b""`` when empty). A file of ``FAST_LANE_MIN_BYTES`` or more comes
    straight through the OpenSSH lane, without SFTP first asking its size. The caller checks
    ``len()``: the file may hold another size than expected."""
    with _scratch() as sink:
        target = remote_path(remote)
        if size < FAST_LANE_MIN_BYTES or not _lane_get(conn, target, sink):
            _get(conn, target, sink)
        sink.flush()
        if os.fstat(sink.fileno()).st_size == 0:
            return b""
        return mmap.mmap(sink.fileno(), 0, access=mmap.ACCESS_COPY)


def _scratch() -> IO[bytes]:
    """An anonymous file in memory (a disk one where Linux's memfd is missing): ssh reads and
    writes it itself, one large read or write here instead of a pipe fed in small pieces."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("remotemap-transfer", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


# -- the OpenSSH lane --------------------------------------------------------------------------


def _lane(conn: Connection) -> OpenSSH | None:
    """The connection's OpenSSH lane, made on first use; None where it cannot be used."""
    with conn._lock:
        lane: OpenSSH | None = conn.fast_lane
        if lane is None:
            reason = unusable_reason(conn.spec, conn._credentials.password is not None)
            lane = conn.fast_lane = OpenSSH(conn.spec, conn._credentials.allow_agent, reason)
            if reason:
                log.debug("%s: transfers by SFTP: %s", conn.spec.target, reason)
    return None if lane.disabled else lane


def _lane_failed(conn: Connection, lane: OpenSSH, what: str, exc: SSHError) -> None:
    """Refused host keys end the transfer; other failures leave it to SFTP, and a lane whose
    master could not log in is not tried again on this connection."""
    if isinstance(exc, HostKeyError):
        raise exc
    log.debug("%s by ssh failed, done by SFTP instead: %s", what, exc)
    if not lane.started:
        lane.disabled = str(exc)


def _lane_put(conn: Connection, target: str, mode: int, source: IO[bytes]) -> bool:
    """Send ``source`` through the lane; False when SFTP must do it."""
    lane = _lane(conn)
    if lane is None:
        return False
    argv = ["sh", "-c", _PUT_SCRIPT, "sh", temp_name(target), target, f"{mode:o}"]
    try:
        lane.run(argv, stdin=source, stdout=None)
    except SSHError as exc:
        _lane_failed(conn, lane, f"upload of {target}", exc)
        return False
    return True


def _lane_put_parts(conn: Connection, target: str, mode: int,
                    parts: Sequence[bytes | memoryview]) -> bool:
    """``_lane_put`` of data in memory, fed to ``ssh`` through a pipe by a thread while it
    sends: no copy of the whole into a file first (a pipe's few pages are reused)."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, ImportError, AttributeError):  # fewer wake-ups
        import fcntl  # Linux's F_SETPIPE_SZ: 1 MiB instead of 64 KiB

        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1 << 20)

    def feed() -> None:
        try:
            for part in parts:
                view = memoryview(part).cast("B")
                while view:
                    view = view[os.write(write_fd, view):]
        except OSError:
            pass  # ssh stopped reading: its exit status says why
        finally:
            os.close(write_fd)

    feeder = threading.Thread(target=feed, name="remotemap-put", daemon=True)
    feeder.start()
    try:
        with os.fdopen(read_fd, "rb") as source:
            return _lane_put(conn, target, mode, source)
    finally:  # the read end is closed: a feeder still writing gets EPIPE and ends
        feeder.join()


def _lane_get(conn: Connection, target: str, sink: IO[bytes]) -> bool:
    lane = _lane(conn)
    if lane is None:
        return False
    try:
        lane.run(["cat", "--", target], stdin=None, stdout=sink)
    except SSHError as exc:
        _lane_failed(conn, lane, f"download of {target}", exc)
        sink.seek(0)
        sink.truncate(0)
        return False
    return True


# -- SFTP --------------------------------------------------------------------------------------


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


def _get(conn: Connection, target: str, sink: IO[bytes]) -> None:
    """Open ``target`` by SFTP (its errors are the precise ones) and learn its size there;
    a large file then comes through the OpenSSH lane, any other by SFTP."""
    with conn._link_errors(f"download of {target}"):
        with conn._sftp_lock:
            try:
                with conn.sftp().open(target, "rb") as f:
                    size = f.stat().st_size or 0
                    if size < FAST_LANE_MIN_BYTES or _lane(conn) is None:
                        _sftp_read(f, size, sink)
                        return
            except OSError as exc:
                raise conn._file_error(exc, target) from exc
        if _lane_get(conn, target, sink):
            return
        with conn._sftp_lock:
            try:
                with conn.sftp().open(target, "rb") as f:
                    _sftp_read(f, None, sink)
            except OSError as exc:
                raise conn._file_error(exc, target) from exc


def _sftp_read(f: paramiko.SFTPFile, size: int | None, sink: IO[bytes]) -> None:
    f.prefetch(size)  # every read request sent at once, answers taken in order
    while block := f.read(SFTP_BLOCK * 32):
        sink.write(block)
