"""Inputs that travel to where the tasks run: :class:`Staged` marks a task's own file,
:func:`staged_path` finds a run-wide one (``send=[...]``) from inside a task.

Where the tasks share the caller's disk (``serial``, ``local``, ``local_with_dumps``) staging
is the identity: a :class:`Staged` argument reaches the function as the file's absolute path
here, and :func:`staged_path` gives the absolute path too. Where they do not (``ssh``,
``cluster``) the backend copies each file once per host into a staging area that mirrors the
caller's absolute paths (``AREA/home/me/data/sub-01.nii.gz``), replaces each :class:`Staged`
by the staged copy's path before the task is sent, and tells the tasks where the area is
through :data:`STAGED_ROOT_ENV` (and the caller's working directory through
:data:`CALLER_CWD_ENV`, so a relative name means what it meant to the caller).

This module runs inside the worker: the standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

#: The staging area on the host the task runs on (unset where staging is the identity).
STAGED_ROOT_ENV = "REMOTEMAP_STAGED_ROOT"
#: The caller's working directory when the run started (relative names are resolved there).
CALLER_CWD_ENV = "REMOTEMAP_CALLER_CWD"

PathLike = str | os.PathLike[str]


class Staged(os.PathLike[str]):
    """A file or directory a task needs, sent to the host the task runs on.

    ``remote_map(f, [(Staged("data/sub-01.nii.gz"),), ...], mode="ssh")``: the path is made
    absolute here, when the marker is made; the function receives a plain path to its copy
    on its host (a ``str``, or a :class:`pathlib.Path` if a ``Path`` was given). A file that
    cannot be sent fails the tasks that need it, naming the path; the other tasks go on.
    In the caller the marker is the local path (``os.fspath(marker)``).
    """

    __slots__ = ("as_path", "path")
    #: Whether this process ever made (or unpickled) a marker: until then no task's arguments
    #: can hold one, and ``run_chunk`` skips looking for them (a walk of every argument costs
    #: several times a tiny task).
    made: ClassVar[bool] = False

    def __init__(self, path: PathLike) -> None:
        Staged.made = True
        #: The absolute path on the caller's side.
        self.path = os.path.abspath(os.fspath(path))
        #: Whether the function gets a ``pathlib.Path`` (it was given one) or a ``str``.
        self.as_path = not isinstance(path, str)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"Staged({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Staged) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("Staged", self.path))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.path, self.as_path))

    def given(self, path: str) -> Any:
        """``path`` as the function expects it: a ``str``, or a ``Path`` if one was given."""
        if not self.as_path:
            return path
        import pathlib

        return pathlib.Path(path)


def _rebuild(path: str, as_path: bool) -> Staged:
    staged = Staged(path)
    staged.as_path = as_path
    return staged


def mirrored(root: str, local_path: str) -> str:
    """Where the caller's absolute ``local_path`` is found under the staging area ``root``."""
    return root.rstrip("/") + "/" + local_path.lstrip("/")


def staged_path(path: PathLike) -> str:
    """Inside a task: the path of ``path`` (as the caller named it in ``send=[...]``,
    relative to the caller's working directory, or absolute) on the host the task runs on.

    Where tasks share the caller's disk this is the absolute path. FileNotFoundError, naming
    the path, when it is not there (not sent, or sent under another name)."""
    cwd = os.environ.get(CALLER_CWD_ENV) or os.getcwd()
    absolute = os.path.normpath(os.path.join(cwd, os.fspath(path)))
    root = os.environ.get(STAGED_ROOT_ENV)
    found = absolute if not root else mirrored(root, absolute)
    if not os.path.exists(found):
        where = f" (staged at {found})" if root else ""
        raise FileNotFoundError(f"{os.fspath(path)} was not staged{where}: name it in "
                                f"send=[...] of the run, as a path relative to the caller's "
                                f"working directory {cwd} or an absolute one")
    return found


def find_staged(value: Any) -> Iterator[Staged]:
    """Every :class:`Staged` in ``value`` (through tuples, lists, sets and dicts)."""
    if isinstance(value, Staged):
        yield value
    elif isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            yield from find_staged(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from find_staged(item)


def replace_staged(value: Any, where: Callable[[Staged], Any]) -> Any:
    """``value`` with each :class:`Staged` ``s`` replaced by ``where(s)``; containers without
    one are returned as they are (the same object)."""
    if isinstance(value, Staged):
        return where(value)
    if isinstance(value, (tuple, list, set, frozenset)):
        items = [replace_staged(item, where) for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, dict):
        replaced = {key: replace_staged(item, where) for key, item in value.items()}
        if all(replaced[key] is item for key, item in value.items()):
            return value
        return type(value)(replaced) if type(value) is not dict else replaced
    return value


def here(staged: Staged) -> Any:
    """Where tasks share the caller's disk: the path itself, checked to exist (a missing
    input fails its task naming the path, as it does where files are sent)."""
    if not os.path.exists(staged.path):
        raise FileNotFoundError(f"staged input {staged.path} does not exist")
    return staged.given(staged.path)


def resolve_here(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A task's arguments with each :class:`Staged` left in them made a local path."""
    return replace_staged(args, here), replace_staged(kwargs, here)
