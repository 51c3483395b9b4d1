"""Turning argument lists into remote command lines, and remote paths into SFTP paths.

An SSH "exec" request carries one string that the remote user's login shell parses. Every
argument is quoted with :func:`shlex.quote` and the results joined with spaces, so what the
remote program receives is exactly the list given here; no argument is ever formatted into a
shell string. The quoting is POSIX shell quoting (sh, bash, dash, zsh, ksh); csh-family login
shells mishandle newlines inside quotes.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence


def quote_argv(argv: Sequence[str]) -> str:
    """The command line that makes a POSIX shell run ``argv`` exactly as given."""
    if isinstance(argv, str):
        raise TypeError("argv must be a list of arguments, not a string")
    if not argv:
        raise ValueError("argv must name a program")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"every argument must be a str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            # A NUL cannot be passed in an argv at all; refuse rather than truncate silently.
            raise ValueError(f"argument contains a NUL byte: {arg!r}")
    return " ".join(shlex.quote(arg) for arg in argv)


def remote_path(path: str) -> str:
    """A path as SFTP and a quoted command both understand it.

    SFTP does no ``~`` expansion and a quoted ``'~/x'`` is not expanded by the shell either, but
    both start in the user's home directory: ``~`` and ``~/x`` become ``.`` and ``x``.
    """
    if not path:
        raise ValueError("empty remote path")
    if path == "~":
        return "."
    if path.startswith("~/"):
        rest = path[2:].lstrip("/")
        return posixpath.normpath(rest) if rest else "."
    if path.startswith("~"):
        raise ValueError(f"~user paths are not supported: {path!r}")
    return posixpath.normpath(path)
