"""The errors remotemap raises, and the record of one failed task.

Every exception remotemap raises derives from :class:`RemotemapError`, so ``except
RemotemapError`` catches them all; each also keeps the built-in base it had before the common
root (``RuntimeError``, ``ValueError``), so existing ``except`` clauses still match. Errors carry
data (which task, which host, which config key) so callers can act on them without parsing
messages.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: How many failures ``str(RemoteException)`` spells out before summarising the rest.
_FAILURES_SHOWN = 3
#: How many trailing traceback lines each shown failure quotes.
_TRACEBACK_LINES = 6
#: How many of the last lines a shown failure's task printed are quoted.
_OUTPUT_LINES = 5

#: What went wrong with a task, without parsing text; see :class:`TaskFailure` for each kind.
FailureKind = Literal[
    "exception", "crash", "pickling", "timeout", "cancelled", "lost", "tampered", "backend"
]


class RemotemapError(Exception):
    """The root of every exception remotemap raises (its SSH layer's :class:`SSHError` too)."""


@dataclass(frozen=True)
class TaskFailure:
    """One failed task: what went wrong, where, and the traceback as the worker saw it.

    ``kind`` (a :data:`FailureKind`) tells failures apart without parsing text:

    * ``"exception"``: the function raised; :meth:`exception` gives the exception back.
    * ``"crash"``: the process running it died (a signal, a non-zero exit, ended by the
      scheduler) without writing an outcome.
    * ``"pickling"``: an argument or the result could not cross the process boundary. Never
      retried: another attempt would fail the same way.
    * ``"timeout"``: it ran past its ``timeout`` (or a cluster job past its walltime).
    * ``"cancelled"``: it was stopped before it finished: its :class:`Executor` stopped, or
      its cluster job was cancelled (``remotemap cancel``, ``scancel``, ``qdel``).
    * ``"lost"``: its outcome never came back though nothing says the task failed: the worker
      vanished (a dropped connection, a job that exited without an outcome), its outcome could
      not be written (a full disk), or the worker failed around the task.
    * ``"tampered"``: its outcome file failed its integrity check (written by someone without
      the run's key) and was not loaded.
    * ``"backend"``: a workflow step whose mode itself failed (a host that cannot be reached,
      a cluster run that ended as a whole), not the step's own function.
    """

    index: int
    exception_type: str
    message: str
    traceback: str = ""
    host: str = "localhost"
    kind: FailureKind = "exception"
    #: The original exception, pickled by the worker when it could be; see :meth:`exception`.
    exception_pickle: bytes | None = field(default=None, repr=False, compare=False)
    #: How many times the task was tried (more than 1 with ``retries``).
    attempts: int = 1
    #: The failures of the earlier attempts, oldest first.
    previous: tuple[TaskFailure, ...] = field(default=(), repr=False, compare=False)
    #: When this attempt ran: (start, end) in seconds since the epoch on the host that ran it;
    #: where the worker left no record (it crashed, or never started the task), from when the
    #: caller sent the task to when it learnt of the failure. None when unknown.
    timing: tuple[float, float] | None = field(default=None, repr=False, compare=False)
    #: ``host:pid`` of the process that ran this attempt ("" when unknown, e.g. a crash).
    worker: str = field(default="", repr=False, compare=False)
    #: What the task printed on stdout and stderr (this attempt's; bounded, see
    #: ``remotemap.capture``). A crashed or timed-out task alone in its chunk gets the tail of
    #: its worker's log instead.
    output: str = field(default="", repr=False, compare=False)

    def exception(self) -> BaseException | None:
        """The original exception object, or None where it could not cross the boundary."""
        if self.exception_pickle is None:
            return None
        try:
            exc = pickle.loads(self.exception_pickle)
        except (Exception, SystemExit):  # a __reduce__ that exits must not end the caller
            return None
        return exc if isinstance(exc, BaseException) else None

    def summary(self, traceback_lines: int = _TRACEBACK_LINES) -> str:
        """A few readable lines: index, host, exception, and the tail of the traceback."""
        tries = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        head = f"task {self.index} on {self.host}{tries}: {self.exception_type}: {self.message}"
        tail = [line for line in self.traceback.rstrip().splitlines() if line.strip()]
        if not tail:
            return head
        shown = _user_and_last_frames(tail, traceback_lines) or tail[-traceback_lines:]
        return head + "".join("\n    " + line for line in shown)


#: The first line of a frame in a formatted traceback.
_FRAME = re.compile(r'^  File "(?P<file>[^"]*)", line \d+')
_TRACEBACK_HEAD = "Traceback (most recent call last):"
#: Where a remote host's standard library is, whatever its prefix.
_REMOTE_STDLIB = re.compile(r"[/\\]lib[/\\]python\d+\.\d+[/\\]")
#: This interpreter's standard library (where ``os`` is; not sysconfig, whose data module the
#: worker would then load).
_STDLIB = os.path.join(os.path.dirname(os.path.abspath(os.__file__)), "")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _library(path: str) -> str | None:
    """The library a traceback's file belongs to, or None when it is the user's own code."""
    parts = [p for p in re.split(r"[/\\]", path) if p]
    for marker in ("site-packages", "dist-packages"):
        if marker in parts[:-1]:
            return parts[parts.index(marker) + 1].removesuffix(".py")
    for i, part in enumerate(parts[:-1]):
        # remotemap here, or a copy of it on a remote host (its files are those of ours)
        if part == "remotemap" and os.path.isfile(os.path.join(_PACKAGE_PARENT, *parts[i:])):
            return "remotemap"
    if path.startswith("<frozen ") or path.startswith(_STDLIB) or _REMOTE_STDLIB.search(path):
        return "the standard library"
    return None


def _user_and_last_frames(lines: list[str], max_tail: int) -> list[str] | None:
    """The deepest frame of the user's own code, one line saying which frames follow it
    unshown, the last frame and the exception: for a task that failed deep in a library,
    where the last lines alone show only the library's frames. None when the last frame is
    the user's (the tail then shows it) or the text is not a traceback this can read."""
    if _TRACEBACK_HEAD not in lines:
        return None
    body = lines[len(lines) - lines[::-1].index(_TRACEBACK_HEAD):]  # the last exception's
    frames: list[list[str]] = []
    libraries: list[str | None] = []
    read = 0  # lines of body that belong to frames; the exception follows them
    for line in body:
        frame = _FRAME.match(line)
        if frame is not None:
            frames.append([line])
            libraries.append(_library(frame["file"]))
        elif frames and line.startswith("  "):
            frames[-1].append(line)
        else:
            break
        read += 1
    if not frames or libraries[-1] is None or None not in libraries:
        return None
    user = len(libraries) - 1 - libraries[::-1].index(None)
    hidden = libraries[user + 1:-1]
    between = []
    if hidden:
        names = ", ".join(dict.fromkeys(str(name) for name in hidden))
        between = [f"  ... {len(hidden)} frame{'s' * (len(hidden) > 1)} in {names} not shown "
                   "(the failure's .traceback has them all)"]
    return [*frames[user], *between, *frames[-1], *body[read:][:max_tail]]


class RemoteException(RemotemapError):
    """Raised after a run in which one or more tasks failed.

    ``failures`` holds one :class:`TaskFailure` per failed task, in index order; ``results`` is the
    full result list with every successful value at its index (``None`` where the task failed or
    never ran), so work that succeeded is never thrown away.
    """

    def __init__(
        self,
        failures: Sequence[TaskFailure],
        results: list[Any],
        n_tasks: int | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.failures: list[TaskFailure] = sorted(failures, key=lambda f: f.index)
        self.results = results
        self.n_tasks = len(results) if n_tasks is None else n_tasks
        #: The stored run (``run_dir=``/``resume=``), which ``remotemap retry`` can rerun.
        self.run_dir = run_dir
        super().__init__(self._describe())
        if self.failures:
            self.__cause__ = self.failures[0].exception()

    @property
    def failed_indices(self) -> list[int]:
        return [f.index for f in self.failures]

    def _describe(self) -> str:
        n = len(self.failures)
        lines = [f"{n} of {self.n_tasks} task{'s' if self.n_tasks != 1 else ''} failed"]
        lines += [f.summary() + _output_tail(f.output) for f in self.failures[:_FAILURES_SHOWN]]
        if n > _FAILURES_SHOWN:
            rest = ", ".join(str(i) for i in self.failed_indices[_FAILURES_SHOWN:][:20])
            more = " ..." if n - _FAILURES_SHOWN > 20 else ""
            lines.append(f"... and {n - _FAILURES_SHOWN} more (tasks {rest}{more}); see .failures")
        if self.run_dir is not None:
            lines.append(f"the run is stored in {self.run_dir}: `remotemap retry {self.run_dir}` "
                         "reruns the failed tasks")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures, self.results, self.n_tasks, self.run_dir))


def _output_tail(output: str) -> str:
    """The last lines a task printed, marked as such, to follow its summary ("" if none)."""
    printed = output.rstrip().splitlines()
    if not printed:
        return ""
    shown = printed[-_OUTPUT_LINES:]
    which = (f"last {len(shown)} of {len(printed)} lines" if len(shown) < len(printed)
             else f"{len(printed)} line{'s' * (len(printed) > 1)}")
    return (f"\n    output of the task ({which}; the failure's .output has it all):"
            + "".join(f"\n    | {line}" for line in shown))


class ConfigError(RemotemapError):
    """A configuration file or option that cannot be used, naming the file and the key."""

    def __init__(self, message: str, path: Path | str | None = None, key: str | None = None):
        self.path = Path(path) if path is not None else None
        self.key = key
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the message as built, so a pickled copy reads the same.
        return (_rebuild_config_error, (str(self), self.path, self.key))


def _rebuild_config_error(text: str, path: Path | None, key: str | None) -> ConfigError:
    err = ConfigError.__new__(ConfigError)
    Exception.__init__(err, text)
    err.path, err.key = path, key
    return err


class BackendUnavailable(RemotemapError, RuntimeError):
    """A mode that exists but cannot run here, with the reason and how to fix it."""


class TaskTimeout(RemotemapError):
    """A task ran past its ``timeout`` (raised inside the task where it runs in-process)."""


class UnsafePath(RemotemapError):
    """A directory or file that another user could change, so nothing in it is trusted."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"refusing to use {self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class TamperedFile(RemotemapError):
    """A file whose authentication tag does not match: written by someone without the run's
    key (another user, another run), or damaged. It is never unpickled."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"{self.path} failed its integrity check (not written by this run, or "
                         "altered since): it was not loaded")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path,))
