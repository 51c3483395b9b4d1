"""The contract every backend fulfils: a session that takes chunks and gives back results.

It lives below the backends, next to the driver that drives it, so the driver never imports a
backend and each backend imports only the contract (``remotemap.backends.base`` re-exports it
for existing code).

A backend is one small class whose ``open`` starts its workers for one function and returns a
:class:`Session`. A session is driven from one thread: ``submit`` chunks (each may carry a
per-task timeout and environment), ``wait`` for results, ``close`` to stop every worker and
remove every file. ``wake`` is the one method other threads may call: it makes a blocked
``wait`` return early, so a driver waiting for results notices new submissions at once.

``remote_map``, the executor and the ``cluster`` workflow runner drive sessions with the one
dispatch loop, ``remotemap.driver.dispatch``, which owns retries and fail-fast; ``drive``
adds timeouts, resume and progress (see ``remotemap.driver``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from remotemap.tasks import Chunk, ChunkResult

if TYPE_CHECKING:
    from remotemap.capture import Printer
    from remotemap.config.declarations import Section


@dataclass(frozen=True)
class TaskOptions:
    """What applies to every task of a chunk, on top of its arguments."""

    #: Seconds a task may run before it is killed and fails as a timeout.
    timeout: float | None = None
    #: Environment variables set for the task only (in the worker, not in the caller).
    env: Mapping[str, str] = field(default_factory=dict)
    #: The caller stops at the first failure (``on_error="stop"``): a backend that can hold
    #: most tasks back until the first ones went well may do so.
    stop_on_error: bool = False


class Session(ABC):
    """A backend's workers, open for one function."""

    #: How many chunks to keep submitted at once: enough to keep every worker busy.
    capacity: int = 1
    #: Where the session says what holds its tasks back (a cluster job's pending reason; ""
    #: once nothing does): the driver points it at the progress bar. None: nowhere.
    show_status: Callable[[str], None] | None = None

    @abstractmethod
    def submit(self, chunk: Chunk) -> None:
        """Start the chunk (or queue it). Failures, even immediate ones, come from ``wait``."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        """Results of chunks that finished; blocks until one does, ``timeout`` passes (then
        ``[]``), or :meth:`wake` is called (then maybe ``[]``)."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Chunks submitted whose results ``wait`` has not returned yet."""

    def wake(self) -> None:  # noqa: B027 - a no-op is right for sessions that never block
        """Make a blocked ``wait`` return now (thread-safe)."""

    def count_running(self) -> Callable[[], int] | None:
        """Start counting the tasks that end inside chunks still running (for a progress bar
        that moves per task, not per chunk); what returns that count, callable from any
        thread. None (the default): only whole chunks' results say that tasks ended."""
        return None

    def echo_output(self, printer: Printer) -> bool:
        """Show what tasks print through ``printer`` as they print it; True if this session
        does (it runs tasks in this process), False if their output comes with their results
        (``ChunkResult.outputs``), for the caller to show then."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Stop every worker (killing running tasks) and remove every file. Idempotent."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Backend(ABC):
    #: The mode name users pass to ``remote_map(mode=...)``; also its config section.
    name: ClassVar[str]
    #: Whether a task that kills its process fails alone (False: it takes the caller down).
    isolates_crashes: ClassVar[bool] = True
    #: The mode's ``[name]`` config section (None: it takes no options). The mode registry
    #: reads it here unless the mode was registered with a light module that holds it.
    config_section: ClassVar[Section | None] = None

    def __init__(self, settings: Mapping[str, Any]) -> None:
        #: The backend's config section merged with per-call options, already validated.
        self.settings = dict(settings)

    @classmethod
    def unavailable_reason(cls, settings: Mapping[str, Any]) -> str | None:
        """Why this backend cannot run here (and how to fix it), or None when it can, judged
        from the call's ``settings`` (its config section merged with the call's options), so a
        call that names another host is not refused for what this machine lacks."""
        return None

    def chunksize(self, n_tasks: int) -> int:
        """How many tasks to put in one chunk for a run of ``n_tasks``."""
        return 1

    def chunk_spread(self) -> int:
        """0: chunks keep :meth:`chunksize`. N: they may grow past it once results show tasks
        shorter than a chunk's round trip, while the tasks still to go stay split over at
        least N chunks, one per worker (see ``tasks.ChunkSizer``)."""
        return 0

    @abstractmethod
    def open(self, function: Callable[..., Any], options: TaskOptions) -> Session:
        """Start workers ready to run ``function``."""
