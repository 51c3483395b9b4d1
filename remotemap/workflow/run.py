"""``Workflow.run``: check the graph, resume what a run directory holds, run the rest, report.

:class:`Workflow` lives here, above the graph (``workflow.graph``) and the runners
(``workflow.schedule``, ``workflow.on_cluster``): its :meth:`~Workflow.run` is a thin call
into :func:`run_workflow`, so nothing below imports this module back.

Everything that could stop the run is checked before the first step starts: the graph (ids,
cycles), the options, the mode. Outcomes are stored the moment they arrive, so a run stopped
half-way (Ctrl-C, SIGKILL) keeps every step it finished for the next run in the same
directory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from remotemap.api import make_backend
from remotemap.call_options import ModeName
from remotemap.config import Config, load_config
from remotemap.driver import Policy, make_policy
from remotemap.execution import this_host
from remotemap.executor import Executor
from remotemap.workflow.graph import Graph
from remotemap.workflow.keys import step_keys
from remotemap.workflow.report import DONE, FAILED, NOT_RUN, StepReport, WorkflowReport
from remotemap.workflow.schedule import GraphPlan, StepOutcome, run_in_turn, run_on_executor
from remotemap.workflow.store import WorkflowStore

log = logging.getLogger("remotemap")

#: How a mode runs a whole workflow when it does not run it through an :class:`Executor`:
#: the backend (made from the call's settings), the plan and the retry policy give the
#: outcomes of the steps as they end. Backends know nothing of workflows; this table does.
GraphRunner = Callable[[Any, GraphPlan, Policy], Iterator[StepOutcome]]


def _on_cluster(backend: Any, plan: GraphPlan, policy: Policy) -> Iterator[StepOutcome]:
    """The steps as soma-workflow jobs with dependencies (see ``workflow.on_cluster``);
    imported here so a workflow on another mode never loads the cluster code."""
    from remotemap.backends.cluster import cluster_settings
    from remotemap.workflow.on_cluster import run_graph

    return run_graph(cluster_settings(backend.settings), plan, policy)


GRAPH_RUNNERS: dict[str, GraphRunner] = {
    # in turn, in this thread: serial timeouts use SIGALRM, which needs the main thread
    "serial": run_in_turn,
    "cluster": _on_cluster,
}

#: Seconds between two writes of a running workflow's report (``remotemap status`` reads it).
_REPORT_EVERY = 0.5


class Workflow(Graph):
    """Steps with prerequisites, run on any mode by :meth:`run`."""

    def run(self, mode: str | None = None, *,
            executor: concurrent.futures.Executor | None = None,
            max_parallel: int | None = None, run_dir: str | os.PathLike[str] | None = None,
            **options: Any) -> WorkflowReport:
        """Run every step on ``mode`` and return the report of every step's state.

        ``max_parallel`` bounds the steps running at once; rerunning with the same
        ``run_dir`` skips the steps that finished there. Other options (``config``,
        ``timeout``, ``retries``, ``backoff``, ``env``, the mode's own): see
        :func:`remotemap.workflow.run.run_workflow`.
        """
        return run_workflow(self, mode, executor=executor, max_parallel=max_parallel,
                            run_dir=run_dir, **options)


def run_workflow(workflow: Graph, mode: str | None = None, *,
                 executor: concurrent.futures.Executor | None = None,
                 max_parallel: int | None = None,
                 run_dir: str | os.PathLike[str] | None = None,
                 config: Config | str | os.PathLike[str] | None = None,
                 timeout: float | None = None, retries: int = 0, backoff: float | None = None,
                 env: Mapping[str, str] | None = None, **options: Any) -> WorkflowReport:
    """Run ``workflow``'s steps on ``mode`` (default: the config's mode); report every step.

    - ``max_parallel``: at most this many steps at once (default: as many as the mode runs
      at once); ``serial`` runs one step at a time, lowest ready id first.
    - ``run_dir``: keep every finished step's value there; running the same workflow with
      the same ``run_dir`` again skips the steps that finished and runs the others.
    - ``executor``: run the steps on this :class:`remotemap.Executor`, or any other
      ``concurrent.futures`` executor (then give neither a mode nor options); it is left
      open. A ``concurrent.futures.ThreadPoolExecutor`` suits steps that mostly wait.
    - ``config``, ``timeout``, ``retries``, ``backoff`` (None: 0.5 s), ``env`` and the
      mode's ``options`` mean what they mean for :func:`remotemap.remote_map`, per step.

    A failed step does not stop the steps that do not depend on it; the steps that do are
    reported as not run, naming it. The report is returned, not raised:
    :meth:`WorkflowReport.raise_if_failed` raises when a step failed.
    """
    order = workflow.order()  # a bad graph is an error before anything else happens
    if max_parallel is not None and (isinstance(max_parallel, bool)
                                     or not isinstance(max_parallel, int) or max_parallel < 1):
        raise ValueError(f"max_parallel must be None or a whole number >= 1, got "
                         f"{max_parallel!r}")
    policy = make_policy("continue", timeout, retries,
                         Policy.backoff if backoff is None else backoff, env)
    if executor is not None and (options or any(v is not None for v in (
            mode, config, timeout, env, retries or None, backoff))):
        # The executor was made with its own; taking some of these quietly would mislead.
        raise ValueError("give an executor, or a mode with its options (config, timeout, "
                         "retries, backoff, env, the mode's own), not both")
    with contextlib.ExitStack() as stack:
        backend: Any = None
        if executor is not None:
            mode = str(getattr(executor, "mode", None) or type(executor).__name__)
        else:
            cfg = config if isinstance(config, Config) else load_config(config)
            mode = mode if mode is not None else str(cfg.get("remotemap.mode"))
            if mode in GRAPH_RUNNERS:
                backend = make_backend(mode, cfg, options)
            else:
                executor = stack.enter_context(Executor(
                    ModeName(mode), max_workers=max_parallel, config=cfg, timeout=timeout,
                    retries=retries, backoff=policy.backoff, env=env, **options))
        keys = step_keys(workflow, order)
        store = stack.enter_context(WorkflowStore.open(run_dir, workflow.name, mode))
        plan = GraphPlan(workflow, order, keys,
                         _reusable(workflow, order, store.load_values(keys)),
                         1 if mode == "serial" else max_parallel)
        tracker = _Tracker(plan, store, mode, run_dir is not None)
        if executor is not None:
            return _run_plan(tracker, functools.partial(run_on_executor, plan, executor))
        # the mode takes the whole graph (see GRAPH_RUNNERS)
        return _run_plan(tracker, functools.partial(GRAPH_RUNNERS[mode], backend, plan, policy))


def _run_plan(tracker: _Tracker, start: Callable[[], Iterator[StepOutcome]]) -> WorkflowReport:
    """Record every outcome ``start()`` yields; the report, also when the run is cut short."""
    interrupted = True
    try:
        for outcome in start():
            tracker.record(outcome)
        interrupted = False
    finally:
        report = tracker.finish(interrupted)
    return report


def _reusable(workflow: Graph, order: list[int], stored: dict[int, Any]) -> dict[int, Any]:
    """The stored steps that need not run again: a step is kept only if every prerequisite
    is kept too, so a step runs again after any prerequisite that runs again."""
    kept: dict[int, Any] = {}
    for step_id in order:
        step = workflow.step(step_id)
        if step_id in stored and all(p in kept for p in step.prerequisites):
            kept[step_id] = stored[step_id]
    return kept


class _Tracker:
    """Stores each outcome as it arrives; builds the report of every step at the end."""

    def __init__(self, plan: GraphPlan, store: WorkflowStore, mode: str, resumable: bool):
        self.plan = plan
        self.store = store
        self.mode = mode
        self.resumable = resumable
        self.outcomes: dict[int, StepOutcome] = {}
        self._written = 0.0
        self._write(self._reports(interrupted=False, final=False), "running")

    def record(self, outcome: StepOutcome) -> None:
        if outcome.step in self.outcomes or outcome.step in self.plan.reused \
                or outcome.step not in self.plan.keys:
            log.warning("workflow %s: ignoring a second or unknown outcome for step %s",
                        self.plan.workflow.name, outcome.step)
            return
        self.outcomes[outcome.step] = outcome
        if outcome.ok:
            self.store.record_value(self.plan.keys[outcome.step], outcome.value)
        if time.monotonic() - self._written >= _REPORT_EVERY:
            self._write(self._reports(interrupted=False, final=False), "running")

    def finish(self, interrupted: bool) -> WorkflowReport:
        steps = self._reports(interrupted, final=True)
        report = WorkflowReport(self.plan.workflow.name, self.mode, steps,
                                self.store.root if self.resumable else None, interrupted)
        state = "interrupted" if interrupted else DONE if report.ok else FAILED
        self._write(steps, state)
        return report

    def _write(self, steps: list[StepReport], state: str) -> None:
        counts = {s: sum(1 for step in steps if step.state == s) for s in (DONE, FAILED, NOT_RUN)}
        counts["waiting"] = len(steps) - sum(counts.values())
        self.store.write_report({
            **self.store.read_report(), "state": state, "counts": counts,
            "steps": [{"id": step.id, "name": step.name, "key": self.plan.keys[step.id],
                       "prerequisites": list(self.plan.step(step.id).prerequisites),
                       "state": step.state, "reason": step.reason, "reused": step.reused}
                      for step in steps]})
        self._written = time.monotonic()

    def _reports(self, interrupted: bool, final: bool) -> list[StepReport]:
        reports: dict[int, StepReport] = {}
        for step_id in self.plan.order:
            step = self.plan.step(step_id)
            outcome = self.outcomes.get(step_id)
            if step_id in self.plan.reused:
                reports[step_id] = StepReport(step_id, step.name, DONE,
                                              value=self.plan.reused[step_id], reused=True)
            elif outcome is not None and outcome.failure is None:
                reports[step_id] = StepReport(step_id, step.name, DONE, value=outcome.value)
            elif outcome is not None and outcome.failure is not None:
                failure = outcome.failure
                where = f" (on {failure.host})" if failure.host != this_host() else ""
                reports[step_id] = StepReport(
                    step_id, step.name, FAILED, f"{failure.exception_type}: "
                    f"{failure.message}{where}", failure=failure)
            elif not final:
                reports[step_id] = StepReport(step_id, step.name, "waiting")
            else:
                reports[step_id] = self._not_run(step_id, reports, interrupted)
        return [reports[step.id] for step in self.plan.workflow.steps]

    def _not_run(self, step_id: int, reports: Mapping[int, StepReport],
                 interrupted: bool) -> StepReport:
        step = self.plan.step(step_id)
        blocked: set[int] = set()
        if not step.always:
            for prerequisite in step.prerequisites:
                before = reports[prerequisite]
                if before.state == FAILED:
                    blocked.add(prerequisite)
                elif before.state == NOT_RUN:
                    blocked.update(before.blocked_by)
        if blocked:
            names = ", ".join(f"{b} {self.plan.step(b).name!r}" for b in sorted(blocked))
            reason = f"step{'s' if len(blocked) > 1 else ''} {names} failed"
        elif interrupted:
            reason = "the run was interrupted before it could run"
        else:
            reason = "the run ended before it could run"
        return StepReport(step_id, step.name, NOT_RUN, reason, blocked_by=tuple(sorted(blocked)))
