"""Stored runs: what a run was asked to do and every outcome so far, so it can be resumed.

A stored run is a private directory::

    RUN/run.json          id, mode, function name, task count, state, counts, times
    RUN/function.pkl      the function (cloudpickle)
    RUN/tasks.pkl         the argument lists
    RUN/outcomes/N.pkl    each chunk result, in arrival order, written atomically

Outcomes are recorded the moment they arrive, so a caller killed half-way (even by SIGKILL)
leaves a run whose finished tasks are never run again. Runs live under
``$XDG_STATE_HOME/remotemap/runs`` (``~/.local/state/...``); a run kept elsewhere
(``run_dir=``) is linked from there so ``remotemap runs`` lists it too.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotemap.errors import TaskFailure
from remotemap.execution import dumps, dumps_result, loads, loads_result
from remotemap.protocol import write_atomic
from remotemap.tasks import ChunkResult


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "remotemap" / "runs"


def new_run_id() -> str:
    now = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


@dataclass
class Stored:
    """What a stored run holds for its tasks so far."""

    values: dict[int, Any]
    failures: dict[int, TaskFailure]


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._next = len(list((root / "outcomes").glob("*.pkl"))) if root.exists() else 0

    # -- creating and finding ------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path | None, mode: str, function: Callable[..., Any],
               largs: list[tuple[Any, ...]], lkwargs: list[dict[str, Any]]) -> RunStore:
        run_id = root.name if root is not None else new_run_id()
        root = root if root is not None else state_dir() / run_id
        (root / "outcomes").mkdir(parents=True, mode=0o700)
        root.chmod(0o700)
        store = cls(root)
        write_atomic(root / "function.pkl", dumps(function))
        write_atomic(root / "tasks.pkl", dumps((largs, lkwargs)))
        name = getattr(function, "__qualname__", type(function).__name__)
        store.write_meta({"id": run_id, "mode": mode, "function": name, "n_tasks": len(largs),
                          "created": _now(), "state": "running", "ok": 0, "failed": 0})
        store._register()
        return store

    @classmethod
    def find(cls, run: str | os.PathLike[str]) -> RunStore:
        """A stored run by id (under the state directory) or by path; ValueError if none."""
        for candidate in (Path(run).expanduser(), state_dir() / str(run)):
            if (candidate / "run.json").is_file():
                return cls(candidate.resolve())
        raise ValueError(f"no stored run {str(run)!r} (looked for a directory with run.json "
                         f"there and under {state_dir()}); `remotemap runs` lists them")

    @staticmethod
    def exists_at(root: Path) -> bool:
        return (root / "run.json").is_file()

    def _register(self) -> None:
        """Link a run kept outside the state directory from it, for ``remotemap runs``."""
        link = state_dir() / self.meta()["id"]
        if link.resolve() == self.root.resolve():
            return
        link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(self.root.resolve())

    # -- contents --------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "run.json").read_text())
        return data

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_atomic(self.root / "run.json", json.dumps(meta, indent=2).encode())

    def update(self, **changes: Any) -> None:
        self.write_meta({**self.meta(), **changes, "updated": _now()})

    def function(self) -> Callable[..., Any]:
        function: Callable[..., Any] = loads((self.root / "function.pkl").read_bytes())
        return function

    def tasks(self) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        largs, lkwargs = loads((self.root / "tasks.pkl").read_bytes())
        return largs, lkwargs

    def record(self, result: ChunkResult) -> None:
        """Store ``result``; a value that cannot be pickled becomes its task's failure there
        and in ``result`` (serial mode's values were never pickled before)."""
        write_atomic(self.root / "outcomes" / f"{self._next:08d}.pkl", dumps_result(result))
        self._next += 1

    def outcomes(self) -> Iterator[ChunkResult]:
        for path in sorted((self.root / "outcomes").glob("*.pkl")):
            try:
                _, result = loads_result(path.read_bytes())
            except Exception:
                continue  # cut short by a crash while written elsewhere: not an outcome
            if isinstance(result, ChunkResult):
                yield result

    def load(self) -> Stored:
        """Each task's latest outcome: a later success wins over an earlier failure."""
        stored = Stored({}, {})
        for result in self.outcomes():
            for index, value in zip(result.indices, result.values, strict=True):
                stored.values[index] = value
                stored.failures.pop(index, None)
            for failure in result.failures:
                if failure.index not in stored.values:
                    stored.failures[failure.index] = failure
        return stored


def list_runs() -> list[RunStore]:
    root = state_dir()
    if not root.is_dir():
        return []
    return [RunStore(p.resolve()) for p in sorted(root.iterdir()) if (p / "run.json").is_file()]
