"""``serial``: every task in turn, in this process. The reference for every other backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from remotemap.backends.base import Backend
from remotemap.execution import run_chunk
from remotemap.tasks import Chunk, Results


class SerialBackend(Backend):
    name = "serial"
    isolates_crashes: ClassVar[bool] = False

    def run(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        for chunk in chunks:
            yield run_chunk(function, chunk)
