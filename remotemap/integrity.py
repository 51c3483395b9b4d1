"""Trusting what is on disk: sealed files and directories that no other user controls.

Every pickle remotemap loads (a run's function, a chunk of tasks, an outcome, a stored result)
runs code as the user who loads it. So a pickle is loaded only

- from a directory that no other user can change: owned by this user, not writable by group
  or others, under ancestors that are owned by this user or root and are not writable by
  others unless sticky (``/tmp``) - the rule OpenSSH's ``StrictModes`` applies to a home;
- after its HMAC checks out against the run's secret key, which lives in this process, in the
  worker's memory, or in a file only this user can read - never in the pickle's own directory
  where whoever swapped the directory could write a key of their own.

The checks take ``os.stat`` results or SFTP attributes alike (``unsafe_reason``), so the same
rule holds on ssh hosts and on a cluster's shared disk.

Standard library only: every worker imports this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import posixpath
import secrets
import stat

from remotemap.errors import TamperedFile, UnsafePath

#: Bytes of the HMAC-SHA256 tag in front of every sealed file.
TAG_SIZE = 32
#: Bytes of a run's secret key.
KEY_SIZE = 32


def new_key() -> bytes:
    """A fresh random key for one run."""
    return secrets.token_bytes(KEY_SIZE)


def _tag(key: bytes, data: bytes | memoryview) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def seal(key: bytes, data: bytes) -> bytes:
    """``data`` with its tag in front, for :func:`unseal` to check."""
    return _tag(key, data) + data


def tag(key: bytes, data: bytes | memoryview) -> bytes:
    """The tag :func:`seal` puts in front of ``data``: to write the two without joining them
    (a copy of a large file), then :func:`check_tag` when reading them apart."""
    return _tag(key, data)


def check_tag(key: bytes, found: bytes, data: bytes | memoryview, path: str) -> None:
    """TamperedFile (naming ``path``) unless ``found`` is the tag of ``data``."""
    if len(found) != TAG_SIZE or not hmac.compare_digest(found, _tag(key, data)):
        raise TamperedFile(path)


def unseal(key: bytes, blob: bytes, path: str) -> memoryview:
    """The data sealed in ``blob`` (read from ``path``); TamperedFile if the tag is wrong.

    Returns a view, not a copy: chunks and outcomes can be hundreds of MB.
    """
    view = memoryview(blob)
    check_tag(key, bytes(view[:TAG_SIZE]), view[TAG_SIZE:], path)
    return view[TAG_SIZE:]


def file_key(key: bytes, name: str) -> bytes:
    """The key that seals the file called ``name`` in a run: a sealed file moved to another
    name (an old outcome put in place of another chunk's) then fails its check."""
    return _tag(key, name.encode())


def write_key_file(path: str, key: bytes) -> None:
    """Store ``key`` (hex) in a new 0600 file in a private directory (made 0700 if missing)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    check_private_dir(folder)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")


def read_key_file(path: str) -> bytes:
    """The key in ``path``: UnsafePath unless only this user could have written or read it."""
    check_private_dir(os.path.dirname(os.path.abspath(path)))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        reason = unsafe_reason(path, st.st_mode, st.st_uid, me=os.geteuid(), ancestor=False)
        if reason is None and st.st_mode & 0o077:
            reason = f"{path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o})"
        if reason is not None:
            raise UnsafePath(path, reason)
        text = f.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise UnsafePath(path, f"{path} does not hold a run key")
    return key


def unsafe_reason(path: str, mode: int, uid: int, *, me: int, ancestor: bool) -> str | None:
    """Why another user could change what is in ``path`` (None when no one else can).

    ``path`` itself must be owned by ``me`` and writable by no one else. An ``ancestor`` may
    also belong to root, and may be writable by others when it is sticky (then only the owner
    of an entry may rename or remove it).
    """
    owners = (me, 0) if ancestor else (me,)
    if uid not in owners:
        return (f"{path} is owned by uid {uid} ({_user_name(uid)}), "
                f"not by uid {me} ({_user_name(me)})")
    writable_by_others = mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not (ancestor and mode & stat.S_ISVTX):
        who = "others" if mode & stat.S_IWOTH else "its group"
        return f"{path} can be written by {who} (mode {stat.S_IMODE(mode):04o})"
    return None


def check_private_dir(path: str, *, me: int | None = None) -> None:
    """UnsafePath unless ``path`` and every directory above it are safe from other users."""
    _check_chain(path, me, ancestor=False)


def check_parent_for_new_dir(parent: str, *, me: int | None = None) -> None:
    """UnsafePath unless a directory made in ``parent`` could not be renamed away by others."""
    _check_chain(parent, me, ancestor=True)


def _check_chain(path: str, me: int | None, *, ancestor: bool) -> None:
    me = os.geteuid() if me is None else me
    # The real path: a symbolic link on the way would otherwise hide the directories that
    # hold its target.
    current = os.path.realpath(path)
    while True:
        st = os.stat(current)
        reason = unsafe_reason(current, st.st_mode, st.st_uid, me=me, ancestor=ancestor)
        if reason is not None:
            raise UnsafePath(path, reason)
        parent = posixpath.dirname(current)
        if parent == current:
            return
        current, ancestor = parent, True


def identity(path: str) -> tuple[int, int]:
    """What tells one directory from another put in its place: (device, inode)."""
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def check_same_dir(path: str, expected: tuple[int, int]) -> None:
    """UnsafePath if ``path`` is no longer the directory that was created there."""
    try:
        found = identity(path)
    except OSError as exc:
        raise UnsafePath(path, f"{path} is gone ({exc.strerror})") from None
    if found != expected:
        raise UnsafePath(path, f"{path} was replaced by another directory while the run went on")


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return "unknown user"


def make_private_dir(path: str, *, fresh: bool = True) -> None:
    """Make ``path`` (and missing parents) a directory no other user can change, or UnsafePath.

    An existing ``path`` must already belong to this user; with ``fresh`` (a directory about to
    be filled) it is made 0700, else it must already be private. A missing one is made 0700
    only under a parent where no one else could rename it away and put another in its place.
    """
    me = os.geteuid()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        existing = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        check_parent_for_new_dir(existing, me=me)
        os.makedirs(path, mode=0o700, exist_ok=True)
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(path, f"{path} is not a directory")
        reason = unsafe_reason(path, stat.S_IFDIR | 0o700, st.st_uid, me=me, ancestor=False)
        if reason is not None:  # before any chmod: root could chmod another user's directory
            raise UnsafePath(path, reason)
        if fresh:
            os.chmod(path, 0o700)
    check_private_dir(path, me=me)
