"""The contract every backend fulfils: take chunks of tasks, give back their results.

A backend is one small class. ``run`` is a generator: it pulls chunks from the iterable only
when it has room for them (so callers may feed it lazily) and yields a :class:`ChunkResult` as
each chunk finishes, in any order. Closing the generator early (fail fast, Ctrl-C) must stop
every worker it started and remove what it wrote: backends put that in ``finally``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from remotemap.tasks import Chunk, Results


class Backend(ABC):
    #: The mode name users pass to ``remote_map(mode=...)``; also its config section.
    name: ClassVar[str]
    #: Whether a task that kills its process fails alone (False: it takes the caller down).
    isolates_crashes: ClassVar[bool] = True

    def __init__(self, settings: Mapping[str, Any]) -> None:
        #: The backend's config section merged with per-call options, already validated.
        self.settings = dict(settings)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run here (and how to fix it), or None when it can."""
        return None

    def chunksize(self, n_tasks: int) -> int:
        """How many tasks to put in one chunk for a run of ``n_tasks``."""
        return 1

    @abstractmethod
    def run(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        """Run every chunk; yield each one's result as it finishes."""
