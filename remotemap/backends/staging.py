"""Staging inputs on SSH hosts: each file once per host, skipped when the host has it
unchanged, resumed when a link dropped mid-file, removed at the end.

A session's files go to one staging area per host, ``STAGE_DIR/run-TOKEN`` (private, 0700),
which mirrors the caller's absolute paths (``AREA/home/me/data/atlas.nii.gz``), so a run-wide
file (``send=[...]``) and a task's :class:`~remotemap.staged.Staged` input are found the same
way (:func:`remotemap.staged.staged_path`). The area outlives a dropped connection (the next
one finds what arrived) and is removed when the session's last runner on the host leaves,
unless ``keep_staged``: then it is ``STAGE_DIR/kept-CALLER`` and shared by later runs, which
skip what is there unchanged (same size and mtime).

The caller's side decides which tasks go: a file that cannot be read here fails the tasks
that need it (a run-wide one: every task), naming the path; a link that drops while a file
goes is the connection's failure, handled like any other (the chunk goes back to the queue).
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remotemap.errors import RemotemapError, TaskFailure
from remotemap.execution import failure_from_exception
from remotemap.staged import CALLER_CWD_ENV, STAGED_ROOT_ENV, Staged, mirrored, replace_staged
from remotemap.tasks import Chunk

if TYPE_CHECKING:
    from remotemap.backends.staging_targets import Target

log = logging.getLogger("remotemap")

DEFAULT_STAGE_DIR = ".cache/remotemap/staged"


class StagingStopped(Exception):
    """The session is closing: a file on its way stops, and the area is cleaned up."""


class CannotSend(RemotemapError, OSError):
    """A file the tasks need cannot be read on the caller's side (missing, unreadable)."""


@dataclass(frozen=True)
class StagingPlan:
    """What a session stages, settled on the caller's side when it opens."""

    #: Run-wide inputs: absolute local paths of files and directories (``send``).
    send: tuple[str, ...]
    keep: bool
    stage_dir: str
    #: The area's name under ``stage_dir``.
    area: str
    caller_cwd: str


def staging_plan(settings: Mapping[str, Any], token: str) -> StagingPlan:
    """The plan of an ``ssh`` session from its settings (``send``, ``keep_staged``,
    ``stage_dir``); relative paths of ``send`` are made absolute against the caller's
    directory, here and now."""
    keep = bool(settings.get("keep_staged"))
    return StagingPlan(_send(settings), keep,
                       str(settings.get("stage_dir") or DEFAULT_STAGE_DIR),
                       f"kept-{_caller()}" if keep else f"run-{token}", os.getcwd())


def cluster_plan(settings: Mapping[str, Any], run_root: str) -> StagingPlan:
    """A ``cluster`` run's plan: the area is ``RUN/staged`` in the shared directory (it goes
    with the run directory), or with ``keep_staged`` ``SHARED/staged-kept-CALLER``."""
    if settings.get("keep_staged"):
        return StagingPlan(_send(settings), True, posixpath.dirname(run_root),
                           f"staged-kept-{_caller()}", os.getcwd())
    return StagingPlan(_send(settings), False, run_root, "staged", os.getcwd())


def _send(settings: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(os.path.abspath(os.path.expanduser(os.fspath(p)))
                 for p in settings.get("send") or ())


def _caller() -> str:
    """This machine's name, as a file name (kept areas of two callers do not mix)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())


def local_files(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """The regular files at ``path`` (itself, or under it if a directory), with their stat;
    CannotSend naming the path when it is missing or unreadable."""
    try:
        info = os.stat(path)
        if not os.path.isdir(path):
            with open(path, "rb"):
                pass
            yield path, info
            return
        for folder, _, names in os.walk(path, onerror=_raise):
            for name in sorted(names):
                file = os.path.join(folder, name)
                with open(file, "rb"):
                    pass
                yield file, os.stat(file)
    except OSError as exc:
        raise CannotSend(exc.errno, f"cannot send {exc.filename or path}: {exc.strerror}",
                         exc.filename or path) from exc


def _raise(exc: OSError) -> None:
    raise exc


class HostStaging:
    """One host's staging area for one session (shared by the host's runners)."""

    def __init__(self, host: str, plan: StagingPlan) -> None:
        self.host = host
        self.plan = plan
        self.lock = threading.Lock()
        #: The area's absolute path on the host, known at the first connection.
        self.where: str | None = None
        #: The same, once the area was made (by the first file sent).
        self.root: str | None = None
        #: Local files already on the host in this session.
        self.placed: set[str] = set()
        self._made: set[str] = set()
        self.users: set[int] = set()
        self.bytes_sent = 0
        #: Why the run-wide files could not all be sent (every task fails with it).
        self.run_wide_error: CannotSend | None = None

    def open(self, target: Target, user: int,
             stop: Callable[[], bool]) -> dict[str, str]:
        """Send the run-wide files (the area is made with the first one); the environment
        that tells the tasks where the area is."""
        with self.lock:
            self.users.add(user)
            if self.where is None:  # known before it exists: a run that sends nothing
                folder = self.plan.stage_dir
                folder = folder[2:] if folder.startswith("~/") else folder
                home = "/" if folder.startswith("/") else target.home()
                self.where = posixpath.normpath(posixpath.join(home, folder, self.plan.area))
            try:
                for path in self.plan.send:
                    try:
                        self._place(target, path, stop)
                    except CannotSend as exc:
                        self.run_wide_error = self.run_wide_error or exc
            except StagingStopped:
                pass  # the session is closing: no task runs, the area goes
            return {STAGED_ROOT_ENV: self.where, CALLER_CWD_ENV: self.plan.caller_cwd}

    def place(self, target: Target, staged: Staged, stop: Callable[[], bool]) -> Any:
        """The path of ``staged``'s copy on the host, sent first unless already there."""
        with self.lock:
            return staged.given(self._place(target, staged.path, stop))

    def _place(self, target: Target, path: str, stop: Callable[[], bool]) -> str:
        if self.root is None:  # made with the first file, where no one else could move it
            assert self.where is not None
            target.make_area(self.where)
            self.root = self.where
            self._made.add(self.root)
        for file, info in local_files(path):
            if file not in self.placed:
                self._send(target, file, info, stop)
                self.placed.add(file)
        return mirrored(self.root, path)

    def _send(self, target: Target, file: str, info: os.stat_result,
              stop: Callable[[], bool]) -> None:
        """``file`` to its place in the area, unless it is there with the same size and mtime."""
        assert self.root is not None
        path = mirrored(self.root, file)
        folder = posixpath.dirname(path)
        if folder not in self._made:
            target.makedirs(folder)
            self._made.add(folder)
        if target.state(path) == (info.st_size, int(info.st_mtime)):
            return

        def progress(_: int) -> None:
            if stop():
                raise StagingStopped(f"stopped while sending {file} to {self.host}")

        try:
            sent = target.send(file, path, progress)
        except OSError as exc:
            if exc.filename == file:  # this side's file went away meanwhile
                raise CannotSend(exc.errno, f"cannot send {file}: {exc.strerror}",
                                 file) from exc
            raise
        self.bytes_sent += sent
        log.debug("staged %s on %s (%d bytes sent)", file, self.host, sent)

    def localize(self, target: Target, chunk: Chunk,
                 stop: Callable[[], bool]) -> tuple[Chunk, list[TaskFailure]]:
        """A copy of ``chunk`` whose :class:`Staged` inputs are their copies on the host, with
        the tasks whose files could not be sent left out and failed, naming the file."""
        kept: list[int] = []
        keep = Chunk(chunk.id, kept, [], [])
        failures: list[TaskFailure] = []

        def where(staged: Staged) -> Any:
            return self.place(target, staged, stop)

        for index, args, kwargs in zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True):
            try:
                if self.run_wide_error is not None:
                    raise self.run_wide_error
                args, kwargs = replace_staged(args, where), replace_staged(kwargs, where)
            except CannotSend as exc:
                failure = failure_from_exception(index, exc)
                failures.append(_on_host(failure, self.host))
                continue
            kept.append(index)
            keep.largs.append(args)
            keep.lkwargs.append(kwargs)
        return keep, failures

    def release(self, user: int, target: Target | None) -> None:
        """Runner ``user`` leaves; the last one removes the area (unless kept)."""
        with self.lock:
            if user not in self.users:
                return
            self.users.discard(user)
            if self.users or self.root is None or self.plan.keep:
                return
            if target is None:
                log.warning("staged files left on %s in %s: the connection was lost",
                            self.host, self.root)
                return
            try:
                target.remove_tree(self.root)
            except Exception as exc:
                log.warning("could not remove the staged files %s on %s: %s", self.root,
                            self.host, exc)
            self.root = None
            self.placed.clear()
            self._made.clear()


def _on_host(failure: TaskFailure, host: str) -> TaskFailure:
    import dataclasses

    return dataclasses.replace(failure, host=host)


class SessionStaging:
    """The staging areas of one session, one per host name."""

    def __init__(self, plan: StagingPlan) -> None:
        self.plan = plan
        self._hosts: dict[str, HostStaging] = {}
        self._lock = threading.Lock()

    def host(self, name: str) -> HostStaging:
        with self._lock:
            staging = self._hosts.get(name)
            if staging is None:
                staging = self._hosts[name] = HostStaging(name, self.plan)
            return staging

    @property
    def bytes_sent(self) -> int:
        return sum(h.bytes_sent for h in self._hosts.values())


def never() -> bool:
    """A stop condition for places that cannot be closing (a cluster run being made)."""
    return False
