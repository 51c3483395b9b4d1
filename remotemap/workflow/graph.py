"""Steps with prerequisites: the graph a workflow runs, checked before anything runs.

:class:`Graph` is a workflow without the means to run it: ``Workflow`` (in
``remotemap.workflow.run``, above the runners) adds :meth:`run`, so that the runners, which
read the graph, never import the module that calls them.

A step is a function with its arguments. ``Workflow.add_step`` returns the step's id (1, 2,
...). Like Scipion's ``_insertFunctionStep``, a step given no ``prerequisites`` follows the
step added just before it, so steps form a chain unless told otherwise; independent steps name
a common prerequisite (or ``prerequisites=[]`` for none at all). A :class:`Result` placeholder
among a step's arguments stands for another step's value and makes that step a prerequisite.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotemap.errors import RemotemapError


class GraphError(RemotemapError, ValueError):
    """A workflow that cannot run (unknown prerequisite, cycle, ...), naming the step."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        #: The id of the step at fault, when there is one.
        self.step = step


@dataclass(frozen=True)
class Result:
    """Stands for the value of step ``step`` in another step's arguments.

    ``Result(3)[0]`` stands for ``value_of_step_3[0]``: only that item is sent to the step
    that uses it, not the whole value.
    """

    step: int
    path: tuple[Any, ...] = ()

    def __getitem__(self, key: Any) -> Result:
        return Result(self.step, (*self.path, key))

    def pick(self, value: Any) -> Any:
        for key in self.path:
            value = value[key]
        return value

    def __repr__(self) -> str:
        return f"Result({self.step})" + "".join(f"[{key!r}]" for key in self.path)


def find_results(obj: Any) -> set[int]:
    """The steps whose :class:`Result` appears in ``obj`` (looking into lists, tuples, dicts)."""
    if isinstance(obj, Result):
        return {obj.step}
    if isinstance(obj, (list, tuple)):
        return set().union(*(find_results(item) for item in obj))
    if isinstance(obj, dict):
        return set().union(*(find_results(item) for item in obj.values()))
    return set()


def resolve(obj: Any, values: Mapping[int, Any], *, partly: bool = False) -> Any:
    """``obj`` with every :class:`Result` replaced by the value it stands for; ``partly``:
    leave the Results of steps ``values`` does not hold (another process resolves them)."""
    if isinstance(obj, Result):
        return obj if partly and obj.step not in values else obj.pick(values[obj.step])
    if isinstance(obj, list):
        return [resolve(item, values, partly=partly) for item in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(resolve(item, values, partly=partly) for item in obj)
    if isinstance(obj, tuple):  # a namedtuple: rebuild it as its own type
        return type(obj)(*(resolve(item, values, partly=partly) for item in obj))
    if isinstance(obj, dict):
        return {key: resolve(item, values, partly=partly) for key, item in obj.items()}
    return obj


@dataclass
class Step:
    """One step of a workflow, as added."""

    id: int
    name: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: Every step that must end first: the given (or implied) ones plus those ``uses`` names.
    prerequisites: tuple[int, ...]
    #: Steps whose value this step's arguments use (through :class:`Result`).
    uses: frozenset[int] = field(default_factory=frozenset)
    #: Run in the calling process instead of on the mode's workers.
    on_client: bool = False
    #: Run once every prerequisite has ended, even if one failed or did not run.
    always: bool = False

    def label(self) -> str:
        return f"step {self.id} {self.name!r}"


def _describe_callable(func: Any) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


class Graph:
    """Steps with prerequisites (``remotemap.workflow.Workflow`` runs them)."""

    def __init__(self, name: str = "workflow") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a workflow's name must be a non-empty string, got {name!r}")
        self.name = name
        self._steps: list[Step] = []

    def add_step(self, func: Callable[..., Any], /, *args: Any,
                 prerequisites: Iterable[int] | None = None, step_name: str | None = None,
                 on_client: bool = False, always: bool = False, **kwargs: Any) -> int:
        """Add the call ``func(*args, **kwargs)`` as a step; return its id.

        - ``prerequisites``: ids of the steps that must finish first. None (the default): the
          step added just before, as in a Scipion protocol; ``[]``: none.
        - A :class:`Result` in ``args`` or ``kwargs`` (also inside lists, tuples and dicts)
          is replaced by that step's value, and that step becomes a prerequisite too.
        - ``step_name``: how reports name the step (default: the function's name); with the
          arguments, it identifies the step when a stored run is resumed.
        - ``on_client``: run in this process rather than on the workers (e.g. to write a
          result where the caller is).
        - ``always``: run once the prerequisites have ended even if one failed or did not run
          (clean-up); such a step cannot use their results.
        """
        step_id = len(self._steps) + 1
        name = step_name if step_name is not None else _describe_callable(func)
        if not isinstance(name, str) or not name:
            raise GraphError(f"step {step_id}: step_name must be a non-empty string, got "
                             f"{name!r}", step_id)
        where = f"step {step_id} {name!r}"
        if not callable(func):
            raise GraphError(f"{where}: the step function must be callable, got "
                             f"{type(func).__name__}: {func!r:.80}", step_id)
        if prerequisites is None:
            given: tuple[int, ...] = (step_id - 1,) if step_id > 1 else ()
        elif isinstance(prerequisites, (str, bytes)) or not isinstance(prerequisites, Iterable):
            raise GraphError(f"{where}: prerequisites must be a list of step ids, got "
                             f"{prerequisites!r}", step_id)
        else:
            given = tuple(prerequisites)
        uses = frozenset(find_results(args) | find_results(kwargs))
        for prerequisite in (*given, *uses):
            if isinstance(prerequisite, bool) or not isinstance(prerequisite, int):
                raise GraphError(f"{where}: prerequisite {prerequisite!r} is not a step id "
                                 "(add_step returns the ids)", step_id)
        if always and uses:
            raise GraphError(f"{where}: an always-run step cannot use the results of steps "
                             f"{sorted(uses)}, which may have failed", step_id)
        self._steps.append(Step(step_id, name, func, tuple(args), dict(kwargs),
                                tuple(sorted(set(given) | uses)), uses, on_client, always))
        return step_id

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    def step(self, step_id: int) -> Step:
        if isinstance(step_id, bool) or not isinstance(step_id, int) \
                or not 1 <= step_id <= len(self._steps):
            raise KeyError(f"no step {step_id!r} in workflow {self.name!r} "
                           f"(ids 1..{len(self._steps)})")
        return self._steps[step_id - 1]

    def __len__(self) -> int:
        return len(self._steps)

    def order(self) -> list[int]:
        """Every step id, each after its prerequisites (lowest id first among ready ones).

        Raises :class:`GraphError` naming the step for an unknown prerequisite, and naming
        the steps of a cycle.
        """
        n = len(self._steps)
        for step in self._steps:
            for prerequisite in step.prerequisites:
                if not 1 <= prerequisite <= n:
                    raise GraphError(f"{step.label()}: prerequisite {prerequisite} is not a "
                                     f"step id (the steps are 1..{n})", step.id)
        waiting = {step.id: len(step.prerequisites) for step in self._steps}
        followers: dict[int, list[int]] = {step.id: [] for step in self._steps}
        for step in self._steps:
            for prerequisite in step.prerequisites:
                followers[prerequisite].append(step.id)
        ready = [step_id for step_id, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            step_id = heapq.heappop(ready)
            order.append(step_id)
            for follower in followers[step_id]:
                waiting[follower] -= 1
                if waiting[follower] == 0:
                    heapq.heappush(ready, follower)
        if len(order) < n:
            cycle = self._find_cycle({s for s, count in waiting.items() if count > 0})
            path = " -> ".join(self.step(s).label() for s in cycle)
            raise GraphError(f"the steps form a cycle: {path}", cycle[0])
        return order

    def _find_cycle(self, stuck: set[int]) -> list[int]:
        """A cycle among ``stuck`` steps (each has a stuck prerequisite), first step repeated."""
        current = min(stuck)
        seen: list[int] = []
        while current not in seen:
            seen.append(current)
            current = min(p for p in self.step(current).prerequisites if p in stuck)
        cycle = seen[seen.index(current):]
        cycle.reverse()  # prerequisite first, as the steps run
        first = cycle.index(min(cycle))  # start at the lowest id: the same text every time
        cycle = cycle[first:] + cycle[:first]
        return [*cycle, cycle[0]]
