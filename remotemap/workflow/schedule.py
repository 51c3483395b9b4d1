"""Running a checked graph: the plan a runner gets, and the generic runner on an Executor.

A runner takes a :class:`GraphPlan` and yields one :class:`StepOutcome` per step it ran, as
each ends. It runs a step once its prerequisites are done (an ``always`` step: once they have
ended), never runs a step after a failed prerequisite, and decides nothing else: states,
reasons, storage and resume are the caller's (``remotemap.workflow.run``), the same for every
runner.

:func:`run_on_executor` is the generic runner: it submits each ready step to a
:class:`remotemap.Executor` (or any ``concurrent.futures`` executor) as its own task,
resolving :class:`Result` placeholders here with the values that came back. A mode that
runs a graph its own way has a runner in ``remotemap.workflow.run.GRAPH_RUNNERS`` (backends
know nothing of workflows) and that runner is given the plan instead: ``serial`` runs the
steps in turn in this thread (:func:`run_in_turn`), and ``cluster`` hands the graph to
soma-workflow as job dependencies (``remotemap.workflow.on_cluster``).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from remotemap.driver import Policy
from remotemap.errors import RemoteException, TaskFailure
from remotemap.execution import failure_from_exception
from remotemap.executor import failure_of
from remotemap.workflow.graph import Graph, Step, resolve

if TYPE_CHECKING:
    from remotemap.backends.base import Backend


@dataclass
class GraphPlan:
    """What is left to run of a workflow, checked."""

    workflow: Graph
    #: Every step id, each after its prerequisites.
    order: list[int]
    #: Each step's stable key (see ``remotemap.workflow.keys``).
    keys: dict[int, str]
    #: Values of the steps done in an earlier run: these are not run again.
    reused: dict[int, Any] = field(default_factory=dict)
    #: At most this many steps at once (None: as many as the mode runs at once).
    max_parallel: int | None = None

    def step(self, step_id: int) -> Step:
        return self.workflow.step(step_id)

    def to_run(self) -> list[int]:
        return [step_id for step_id in self.order if step_id not in self.reused]


@dataclass
class StepOutcome:
    """How one step ended: its value, or its failure."""

    step: int
    value: Any = None
    failure: TaskFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class GraphBackend(Protocol):
    """Kept for existing code: a mode now takes a whole workflow through its entry in
    ``remotemap.workflow.run.GRAPH_RUNNERS``, which must follow the rules in this module's
    docstring (a step with ``on_client`` set runs here, which :func:`run_here` does)."""

    def run_graph(self, plan: GraphPlan, policy: Policy) -> Iterator[StepOutcome]: ...


def run_here(step: Step, values: Mapping[int, Any]) -> StepOutcome:
    """Run ``step`` in this process, with its prerequisites' ``values``."""
    try:
        value = step.func(*resolve(step.args, values), **resolve(step.kwargs, values))
    except Exception as exc:
        return StepOutcome(step.id, failure=failure_from_exception(step.id, exc))
    return StepOutcome(step.id, value)


def _failure_of(step_id: int, exc: BaseException) -> TaskFailure:
    failure = failure_of(exc)
    if failure is not None:
        return failure  # the task's own failure, with the worker's traceback and host
    # The mode itself failed (a host that cannot be reached, say): every step it had fails.
    return failure_from_exception(step_id, exc, kind="backend")


class GraphState:
    """Which steps may run now, given which have ended and how."""

    def __init__(self, plan: GraphPlan) -> None:
        self.plan = plan
        self.waiting = plan.to_run()
        #: step id -> done (True) or failed / will not run (False)
        self.ended: dict[int, bool] = dict.fromkeys(plan.reused, True)

    def drop_blocked(self) -> None:
        """Forget the steps that can no longer run: a prerequisite failed or will not run."""
        kept = []
        for step_id in self.waiting:  # prerequisites first, so one pass reaches every follower
            step = self.plan.step(step_id)
            if not step.always and any(self.ended.get(p) is False for p in step.prerequisites):
                self.ended[step_id] = False
            else:
                kept.append(step_id)
        self.waiting = kept

    def ready(self) -> list[int]:
        """Steps whose prerequisites are all done (``always``: ended), lowest id first."""
        def can_run(step: Step) -> bool:
            if step.always:
                return all(p in self.ended for p in step.prerequisites)
            return all(self.ended.get(p) is True for p in step.prerequisites)

        return sorted(s for s in self.waiting if can_run(self.plan.step(s)))


def run_on_executor(plan: GraphPlan,
                    executor: concurrent.futures.Executor) -> Iterator[StepOutcome]:
    """Run the plan's steps on ``executor`` (a :class:`remotemap.Executor`, or any other
    ``concurrent.futures`` executor), each ready step at once up to ``max_parallel``."""
    graph = GraphState(plan)
    values: dict[int, Any] = dict(plan.reused)
    running: dict[concurrent.futures.Future[Any], int] = {}
    # Client steps get one thread of their own, so a step writing a result here does not
    # hold up collecting the others.
    with concurrent.futures.ThreadPoolExecutor(1, "remotemap-client-step") as client:
        while True:
            graph.drop_blocked()
            free = len(graph.waiting) if plan.max_parallel is None \
                else plan.max_parallel - len(running)
            for step_id in graph.ready()[:max(free, 0)]:
                graph.waiting.remove(step_id)
                running[_submit(plan.step(step_id), values, executor, client)] = step_id
            if not running:
                return
            finished, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in sorted(finished, key=running.__getitem__):
                step_id = running.pop(future)
                error = future.exception()
                if error is None:
                    outcome = StepOutcome(step_id, future.result())
                    values[step_id] = outcome.value
                else:
                    outcome = StepOutcome(step_id, failure=_failure_of(step_id, error))
                graph.ended[step_id] = outcome.ok
                yield outcome


def run_in_turn(backend: Backend, plan: GraphPlan, policy: Policy) -> Iterator[StepOutcome]:
    """Run the plan's steps one at a time in this thread, lowest ready id first, each through
    ``backend`` with ``policy`` (the ``serial`` mode: its timeouts need the main thread)."""
    from remotemap.driver import collect, drive

    graph = GraphState(plan)
    values: dict[int, Any] = dict(plan.reused)
    while True:
        graph.drop_blocked()
        ready = graph.ready()
        if not ready:
            return
        step = plan.step(ready[0])
        graph.waiting.remove(step.id)
        if step.on_client:
            outcome = run_here(step, values)
        else:
            try:
                args, kwargs = resolve(step.args, values), resolve(step.kwargs, values)
            except Exception as exc:
                outcome = StepOutcome(step.id, failure=failure_from_exception(step.id, exc))
            else:
                ran = collect(drive(backend, step.func, [args], [kwargs], policy,
                                    progress=False), 1)
                outcome = (StepOutcome(step.id, ran.results[0]) if not ran.failures else
                           StepOutcome(step.id, failure=replace(ran.failures[0], index=step.id)))
        if outcome.ok:
            values[step.id] = outcome.value
        graph.ended[step.id] = outcome.ok
        yield outcome


def _submit(step: Step, values: Mapping[int, Any], executor: concurrent.futures.Executor,
            client: concurrent.futures.Executor) -> concurrent.futures.Future[Any]:
    try:
        args, kwargs = resolve(step.args, values), resolve(step.kwargs, values)
    except Exception as exc:  # Result(3)[7] on a value without item 7: this step's failure
        failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
        failed.set_exception(RemoteException(
            [failure_from_exception(step.id, exc)], [None]))
        return failed
    if step.on_client:
        return client.submit(_call, step.func, args, kwargs)
    return executor.submit(step.func, *args, **kwargs)


def _call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        # Keep the traceback as text now, as a worker would, before the frames are gone.
        exc.__traceback__ = exc.__traceback__.tb_next if exc.__traceback__ else None
        raise RemoteException([failure_from_exception(0, exc)], [None]) from exc
