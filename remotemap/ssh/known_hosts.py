"""OpenSSH known_hosts files: reading, checking a server key, appending a new one.

Pure Python (no paramiko), following the format in sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT":
comma-separated host patterns (``*``, ``?``, ``!negation``, ``[host]:port`` for ports other
than 22, hashed ``|1|salt|hash`` names), an optional ``@revoked`` or ``@cert-authority`` marker,
the key type and the base64 key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KeyStatus = Literal["ok", "unknown", "changed", "revoked"]


def known_hosts_name(host: str, port: int) -> str:
    """The name a known_hosts file records a server under: ``host`` or ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint_sha256(key_blob: bytes) -> str:
    """The OpenSSH fingerprint of a public key blob: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class KnownHostEntry:
    """One key line of a known_hosts file."""

    path: Path
    lineno: int
    patterns: tuple[str, ...]
    key_type: str
    key_blob: bytes
    marker: str | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.key_blob)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.lineno}"

    def matches(self, name: str) -> bool:
        """Whether this line applies to ``name`` (``host`` or ``[host]:port``)."""
        name = name.lower()
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if negated:
                pattern = pattern[1:]
            if _pattern_matches(pattern, name):
                if negated:
                    return False  # a matching negation vetoes the whole line
                matched = True
        return matched


@dataclass(frozen=True)
class KeyCheck:
    """The verdict on a server key, with the line that decided it (if any)."""

    status: KeyStatus
    entry: KnownHostEntry | None = None


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        return _hashed_matches(pattern, name)
    pattern = pattern.lower()
    if "*" not in pattern and "?" not in pattern:
        return pattern == name
    # Only * and ? are special; "[" in "[host]:port" is literal (unlike fnmatch).
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def _hashed_matches(pattern: str, name: str) -> bool:
    parts = pattern.split("|")
    if len(parts) != 4:
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return False
    actual = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(actual, expected)


def parse_line(line: str, path: Path, lineno: int) -> KnownHostEntry | None:
    """One line as an entry, or None for blanks, comments and lines that cannot be read."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
    if len(fields) < 3:
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError):
        return None
    patterns = tuple(p for p in fields[0].split(",") if p)
    return KnownHostEntry(path, lineno, patterns, fields[1], blob, marker)


class KnownHosts:
    """The entries of several known_hosts files, in order. Missing files are skipped."""

    def __init__(self, entries: Iterable[KnownHostEntry] = ()) -> None:
        self.entries = list(entries)

    @classmethod
    def load(cls, files: Sequence[Path]) -> KnownHosts:
        entries: list[KnownHostEntry] = []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            for lineno, line in enumerate(text.splitlines(), 1):
                entry = parse_line(line, path, lineno)
                if entry is not None:
                    entries.append(entry)
        return cls(entries)

    def lookup(self, name: str) -> list[KnownHostEntry]:
        """The plain (unmarked) key lines that apply to ``name``."""
        return [e for e in self.entries if e.marker is None and e.matches(name)]

    def key_types(self, name: str) -> list[str]:
        """Key types recorded for ``name``, first seen first (to prefer them in negotiation)."""
        seen: dict[str, None] = {}
        for entry in self.lookup(name):
            seen.setdefault(entry.key_type, None)
        return list(seen)

    def check(self, name: str, key_type: str, key_blob: bytes) -> KeyCheck:
        for entry in self.entries:
            if entry.marker == "@revoked" and entry.key_blob == key_blob and entry.matches(name):
                return KeyCheck("revoked", entry)
        known = self.lookup(name)
        for entry in known:
            if entry.key_type == key_type and entry.key_blob == key_blob:
                return KeyCheck("ok", entry)
        if not known:
            return KeyCheck("unknown")
        # The server shows another key than the recorded one(s): report the same-type line when
        # there is one. A host whose recorded type the server no longer offers counts as
        # changed too (we asked for the recorded types first), which is the safe side.
        same_type = [e for e in known if e.key_type == key_type]
        return KeyCheck("changed", (same_type or known)[0])


def append_known_host(path: Path, name: str, key_type: str, key_blob: bytes) -> None:
    """Add ``name key_type base64`` to ``path`` (created 0600, its directory 0700 if new)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{name} {key_type} {base64.b64encode(key_blob).decode('ascii')}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # Several processes may accept new keys at once: one line each, never interleaved.
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)
