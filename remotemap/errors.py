"""The errors remotemap raises, and the record of one failed task.

Every exception remotemap raises derives from :class:`RemotemapError`, so ``except
RemotemapError`` catches them all; each also keeps the built-in base it had before the common
root (``RuntimeError``, ``ValueError``), so existing ``except`` clauses still match. Errors carry
data (which task, which host, which config key) so callers can act on them without parsing
messages.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: How many failures ``str(RemoteException)`` spells out before summarising the rest.
_FAILURES_SHOWN = 3
#: How many trailing traceback lines each shown failure quotes.
_TRACEBACK_LINES = 6

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
        shown = "\n".join("    " + line for line in tail[-traceback_lines:])
        return f"{head}\n{shown}"


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
        lines += [f.summary() for f in self.failures[:_FAILURES_SHOWN]]
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
