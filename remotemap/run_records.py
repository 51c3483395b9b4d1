"""What a stored run matches its outcomes by: the fingerprints of a call, and what a stored
outcome may give back to it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remotemap.errors import TaskFailure
from remotemap.fingerprint import function_fingerprint, task_fingerprints
from remotemap.tasks import ChunkResult


@dataclass
class Fingerprints:
    """The fingerprints of one call: its function's and each task's."""

    function: str = ""
    tasks: list[str] = field(default_factory=list)
    #: Fingerprints of earlier versions of the function whose results were kept on purpose
    #: (``function_changed="keep"``).
    accepted: list[str] = field(default_factory=list)
    #: The function's name, for people.
    name: str = ""

    @classmethod
    def of(cls, function: Callable[..., Any], largs: list[tuple[Any, ...]],
           lkwargs: list[dict[str, Any]]) -> Fingerprints:
        fingerprint = function_fingerprint(function)
        name = fingerprint.rsplit(":", 1)[0]
        return cls(fingerprint, task_fingerprints(largs, lkwargs), [], name)

    def to_json(self) -> bytes:
        return json.dumps({"function": self.function, "accepted": self.accepted,
                           "name": self.name, "tasks": self.tasks}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Fingerprints:
        raw = json.loads(data)
        return cls(str(raw["function"]), [str(t) for t in raw["tasks"]],
                   [str(a) for a in raw.get("accepted", [])], str(raw.get("name", "")))


@dataclass
class Stored:
    """What a stored run holds for the tasks of this call so far."""

    values: dict[int, Any]
    failures: dict[int, TaskFailure]
    #: Tasks with a result computed by another version of the function (not reused).
    stale: set[int] = field(default_factory=set)
    #: What each task printed in the attempt whose outcome is kept (``ChunkResult.outputs``).
    outputs: dict[int, str] = field(default_factory=dict)


def collect_outcome(stored: Stored, record: dict[str, Any], now: Fingerprints) -> None:
    """Add what one stored outcome gives the call fingerprinted ``now``: only results computed
    from the same arguments at the same position, by the same (or an accepted) function."""
    result = record.get("result")
    if not isinstance(result, ChunkResult):
        return
    tasks = record.get("tasks")
    tasks = tasks if isinstance(tasks, dict) else {}

    def same_task(index: int) -> bool:
        return 0 <= index < len(now.tasks) and tasks.get(index) == now.tasks[index]

    same_function = record.get("function") in (now.function, *now.accepted)
    for index, value in zip(result.indices, result.values, strict=True):
        if not same_task(index):
            continue
        if not same_function:
            stored.stale.add(index)
            continue
        stored.values[index] = value  # a later success wins over an earlier failure
        stored.failures.pop(index, None)
        _keep_output(stored, result, index)
    for failure in result.failures:
        if same_function and same_task(failure.index) and failure.index not in stored.values:
            stored.failures[failure.index] = failure
            _keep_output(stored, result, failure.index)


def _keep_output(stored: Stored, result: ChunkResult, index: int) -> None:
    """Task ``index``'s output is the one of the outcome kept for it (none: it printed none)."""
    if index in result.outputs:
        stored.outputs[index] = result.outputs[index]
    else:
        stored.outputs.pop(index, None)
