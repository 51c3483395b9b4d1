"""The rule of ``remotemap.integrity`` on another host, checked over SFTP.

A run directory (or a key file) is made on a host only where no other user of that host could
rename it away: each existing directory on the way is checked with SFTP ``stat`` against the
uid of the remote login (``id -u``), owned by that user or root and not writable by others
unless sticky. SFTP cannot hold a directory open, so this rule, the worker's own check on the
host and the seals on every file stand in for the descriptor used on this machine.
"""

from __future__ import annotations

import posixpath
import stat
import weakref
from typing import TYPE_CHECKING

from remotemap.errors import UnsafePath
from remotemap.integrity import KEY_SIZE, unsafe_reason
from remotemap.ssh.quoting import remote_path
from remotemap.state import key_name

if TYPE_CHECKING:
    from remotemap.ssh.connection import Connection


def remote_uid(conn: Connection) -> int:
    """The uid the connection's commands and SFTP run as on the host."""
    return int(conn.run(["id", "-u"], check=True).stdout_text.strip())


def expand_remote_home(conn: Connection, path: str) -> str:
    """``path`` with a leading ``~`` or ``~/`` made the home of the remote user.

    For a program to run (``ssh.python``): it is quoted like every argument, so the remote
    shell would not expand it. SFTP starts in the login's home, so ``normalize(".")`` is it.
    """
    if path != "~" and not path.startswith("~/"):
        return path
    with conn._sftp_lock:
        home = conn.sftp().normalize(".")
    return posixpath.join(home, path[2:].lstrip("/")) if path != "~" else home


#: Parents found safe, per connection: (path, uid) -> the absolute path. What was checked
#: (each directory on the way owned by the login or root, not writable by others unless
#: sticky) is nothing another user can undo; a new connection checks again. Each warm ``ssh``
#: call makes a run directory there, and the walk costs 12-20 ms of SFTP round trips.
_SAFE_PARENTS: weakref.WeakKeyDictionary[Connection, dict[tuple[str, int], str]] = \
    weakref.WeakKeyDictionary()


def check_remote_parent(conn: Connection, path: str, uid: int) -> str:
    """UnsafePath (naming ``host:path``) unless a directory made at ``path`` could not be
    renamed away by another user of the host; ``path`` as an absolute path there."""
    known = _SAFE_PARENTS.setdefault(conn, {})
    if (path, uid) not in known:
        known[(path, uid)] = _walk_parents(conn, path, uid)
    return known[(path, uid)]


def _walk_parents(conn: Connection, path: str, uid: int) -> str:
    target = remote_path(path)
    with conn._sftp_lock:
        sftp = conn.sftp()
        absolute = posixpath.join(sftp.normalize("."), target)
        existing = absolute
        while True:
            try:
                sftp.stat(existing)
                break
            except FileNotFoundError:
                existing = posixpath.dirname(existing)
        # The real path: a symbolic link on the way would hide the directories of its target.
        current = sftp.normalize(existing)
        while True:
            attrs = sftp.stat(current)
            reason = unsafe_reason(current, attrs.st_mode or 0, _uid(attrs.st_uid), me=uid,
                                   ancestor=True)
            if reason is not None:
                raise UnsafePath(f"{conn.spec.target}:{path}", f"on {conn.spec.target}, {reason}")
            parent = posixpath.dirname(current)
            if parent == current:
                return posixpath.normpath(absolute)
            current = parent


def check_remote_private(conn: Connection, path: str, uid: int) -> None:
    """UnsafePath unless ``path`` on the host is a directory of ``uid`` no one else can write."""
    with conn._sftp_lock:
        attrs = conn.sftp().lstat(remote_path(path))
    mode = attrs.st_mode or 0
    reason = unsafe_reason(path, mode, _uid(attrs.st_uid), me=uid, ancestor=False)
    if reason is None and not stat.S_ISDIR(mode):
        reason = f"{path} is not a directory"
    if reason is not None:
        raise UnsafePath(f"{conn.spec.target}:{path}", f"on {conn.spec.target}, {reason}")


def write_remote_key(conn: Connection, uid: int, folder: str, run_id: str, key: bytes) -> str:
    """Store ``key`` in a 0600 file ``RUN_ID.key`` of the private ``folder`` (made if missing,
    under the remote home if relative); the file's absolute path on the host."""
    folder = check_remote_parent(conn, folder, uid)
    conn.makedirs_private(folder)
    check_remote_private(conn, folder, uid)
    path = posixpath.join(folder, key_name(run_id))
    conn.put_bytes(path, key.hex().encode() + b"\n", mode=0o600)
    return path


def read_remote_key(conn: Connection, uid: int, path: str) -> bytes:
    """The key in ``path`` on the host: UnsafePath unless only ``uid`` could read or write it."""
    folder = posixpath.dirname(path)
    check_remote_parent(conn, folder, uid)
    check_remote_private(conn, folder, uid)
    with conn._sftp_lock:
        attrs = conn.sftp().lstat(remote_path(path))
    mode = attrs.st_mode or 0
    if _uid(attrs.st_uid) != uid or mode & 0o077 or not stat.S_ISREG(mode):
        raise UnsafePath(f"{conn.spec.target}:{path}",
                         f"on {conn.spec.target}, {path} is not a private file of uid {uid} "
                         f"(mode {stat.S_IMODE(mode):04o}, owner uid {attrs.st_uid})")
    try:
        key = bytes.fromhex(conn.get_bytes(path).decode().strip())
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise UnsafePath(f"{conn.spec.target}:{path}", f"{path} does not hold a run key")
    return key


def _uid(value: int | None) -> int:
    return -1 if value is None else int(value)
