"""``cluster`` workflows: the graph handed to the batch system as job dependencies.

A workflow's steps run in one cluster run directory. They go out in *rounds* (one
soma-workflow workflow each, see ``cluster_runs``): a round holds every step that can be
placed now - each prerequisite done, or in the same round - as one job per step, with a
soma-workflow dependency for each prerequisite. The batch system then starts each job once
the jobs before it have ended well; a job whose step failed exits non-zero (``worker run
--fail-exit``), so the jobs after it never start. Without ``on_client`` or ``always`` steps,
a whole workflow is one round: this process only watches.

A step's :class:`~remotemap.workflow.graph.Result` arguments are resolved where it can be:
values this process holds (a step reused from an earlier run, a client step's) travel in the
step's arguments; a value another job computes is read by the job itself from that job's
outcome file on the shared disk (``remotemap.workflow.remote_step``).

What a round cannot hold waits for a later one:

* steps after an ``on_client`` step, which runs here, in a thread of its own;
* ``always`` steps: soma-workflow never starts a job after a failed one, so they go out once
  their prerequisites have ended, however they ended;
* steps after a step still out in an earlier round (soma-workflow has no dependencies between
  workflows).

``max_parallel``: a batch system has no bound per workflow, so with one, steps go out only
once ready, at most ``max_parallel`` (client steps included) at once. Retries: a failed step
goes out again in a later round after its backoff; the steps after it, which soma-workflow
held back, wait for it.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator
from typing import Any

from remotemap.backends.cluster.files import ClusterError
from remotemap.backends.cluster.runs import ClusterRun
from remotemap.backends.cluster.session import close_run, create_run, local_problem
from remotemap.backends.cluster.settings import poll_interval
from remotemap.driver import Policy, RetrySchedule
from remotemap.errors import BackendUnavailable, TaskFailure
from remotemap.execution import failure_from_exception, pickle_function
from remotemap.workflow.graph import Step, resolve
from remotemap.workflow.remote_step import call_step
from remotemap.workflow.schedule import GraphPlan, GraphState, StepOutcome, run_here

log = logging.getLogger("remotemap")


def run_graph(settings: dict[str, Any], plan: GraphPlan,
              policy: Policy) -> Iterator[StepOutcome]:
    """Check that this machine can submit (raising now, before any step runs), then run."""
    problem = local_problem(settings, task_timeout=policy.options.timeout)
    if problem:
        raise BackendUnavailable(f"mode 'cluster' cannot run here: {problem}")
    return _GraphRun(settings, plan, policy).outcomes()


class _GraphRun:
    def __init__(self, settings: dict[str, Any], plan: GraphPlan, policy: Policy) -> None:
        self.settings = settings
        self.plan = plan
        self.policy = policy
        self.graph = GraphState(plan)
        self.position = {step_id: i for i, step_id in enumerate(plan.order)}
        self.values: dict[int, Any] = dict(plan.reused)
        #: Steps out on the cluster -> the chunk file (= outcome file) of their attempt.
        self.on_cluster: dict[int, int] = {}
        #: Steps done on the cluster -> the outcome file holding their value.
        self.done_on_cluster: dict[int, int] = {}
        self.on_client: dict[concurrent.futures.Future[StepOutcome], int] = {}
        self.retries = RetrySchedule(policy)
        self.run: ClusterRun | None = None
        self.interval = poll_interval(settings)

    def outcomes(self) -> Iterator[StepOutcome]:
        with concurrent.futures.ThreadPoolExecutor(1, "remotemap-client-step") as client:
            try:
                while True:
                    self._wait_again(self.retries.due())
                    self.graph.drop_blocked()
                    settled = [o for o in self._place(client) if o is not None]
                    yield from settled
                    if settled:
                        continue  # they may block or free other steps: place again first
                    if not (self.on_cluster or self.on_client or self.retries):
                        if self.graph.waiting:  # cannot happen: a graph's first step is ready
                            log.error("workflow %s: steps %s could not be placed",
                                      self.plan.workflow.name, self.graph.waiting)
                        return
                    yield from self._collect()
            finally:
                if self.run is not None:
                    run, self.run = self.run, None
                    close_run(run, self.settings)

    # -- placing steps ---------------------------------------------------------------------------
    def _wait_again(self, steps: list[int]) -> None:
        """Put steps back among those waiting, in the plan's order (prerequisites first)."""
        if steps:
            waiting = {*self.graph.waiting, *steps}
            self.graph.waiting = sorted(waiting, key=self.position.__getitem__)

    def _can_place(self, step: Step, batch: set[int]) -> bool:
        ended = self.graph.ended
        if step.always:
            return all(p in ended for p in step.prerequisites)
        return all(ended.get(p) is True or p in batch for p in step.prerequisites)

    def _place(self, client: concurrent.futures.Executor) -> list[StepOutcome | None]:
        """Send out every step that can go now; the outcomes of those that failed at once."""
        limit = self.plan.max_parallel
        room = None if limit is None else limit - len(self.on_cluster) - len(self.on_client)
        batch: list[int] = []
        chained: set[int] = set()  # steps of this round the ones after them may depend on
        for step_id in list(self.graph.waiting):
            if room is not None and room <= 0:
                break
            step = self.plan.step(step_id)
            if not self._can_place(step, set() if step.on_client else chained):
                continue
            self.graph.waiting.remove(step_id)
            room = None if room is None else room - 1
            if step.on_client:
                values = {p: self.values[p] for p in step.uses}
                self.on_client[client.submit(run_here, step, values)] = step_id
            else:
                batch.append(step_id)
                if limit is None and not step.always:
                    chained.add(step_id)
        return self._launch(batch) if batch else []

    def _launch(self, batch: list[int]) -> list[StepOutcome | None]:
        """One round with the ``batch`` steps, each a job depending on its prerequisites'."""
        run = self._open_run()
        files = dict(zip(batch, run.reserve(len(batch)), strict=True))
        staged: list[tuple[int, int, tuple[Any, ...], dict[str, Any]]] = []
        failures: list[TaskFailure] = []
        for step_id in batch:
            step = self.plan.step(step_id)
            sources = {p: run.outcome_path(files[p] if p in files else self.done_on_cluster[p])
                       for p in step.uses if p in files or p in self.done_on_cluster}
            here = {p: self.values[p] for p in step.uses if p not in sources}
            try:  # Result(3)[7] on a value without item 7 fails this step, here
                args = resolve(step.args, here, partly=True)
                kwargs = resolve(step.kwargs, here, partly=True)
            except Exception as exc:
                failures.append(failure_from_exception(step_id, exc))
                continue
            staged.append((files[step_id], step_id, (step.func, args, kwargs, sources,
                                                     run.token), {}))
        blobs, encoded, unpicklable = run.stage(staged)
        failures += unpicklable
        # A step whose prerequisite in the batch could not go out waits for its outcome.
        sent = {step_id for _, step_id in encoded}
        job: dict[int, int] = {}  # each step that goes out -> its job's number in the round
        for step_id in batch:
            in_batch = [p for p in self.plan.step(step_id).prerequisites if p in files]
            if step_id in sent and all(p in job for p in in_batch):
                job[step_id] = len(job)
            elif step_id in sent:
                self._wait_again([step_id])
        kept = list(job)
        if kept:
            dependencies = [(job[p], job[step_id]) for step_id in kept
                            for p in self.plan.step(step_id).prerequisites if p in job]
            names = {f"chunks/{files[s]:06d}.pkl" for s in kept}
            run.files.write_many({name: blobs[name] for name in names})
            run.start_round([(files[s], s) for s in kept], dependencies=dependencies,
                            task_timeout=self.policy.options.timeout)
            self.on_cluster.update((s, files[s]) for s in kept)
        return [self._settle(f.index, failure=f) for f in failures]

    def _open_run(self) -> ClusterRun:
        if self.run is None:
            self.run = create_run(self.settings, pickle_function(call_step),
                                  function=f"workflow {self.plan.workflow.name}",
                                  env=self.policy.options.env, n_tasks=None, detached=False)
            self.run.requeue = False  # a job not run was held back by a failed prerequisite
            log.info("cluster run %s for workflow %s in %s:%s", self.run.run_id,
                     self.plan.workflow.name, self.run.files.label, self.run.files.root)
        return self.run

    # -- outcomes ------------------------------------------------------------------------------
    def _collect(self) -> Iterator[StepOutcome]:
        """Whatever ended since the last look; waits a little when nothing did."""
        ended: list[StepOutcome | None] = []
        if self.run is not None and self.on_cluster:
            ended += self._poll(self.run)
        for future in [f for f in self.on_client if f.done()]:
            outcome = future.result()
            del self.on_client[future]
            ended.append(self._settle(outcome.step, outcome.value, outcome.failure))
        settled = [o for o in ended if o is not None]
        if not settled:
            wait = self.interval
            due = self.retries.next_in()
            wait = wait if due is None else min(wait, due)
            concurrent.futures.wait(self.on_client, wait)
        yield from settled

    def _poll(self, run: ClusterRun) -> list[StepOutcome | None]:
        try:
            values, failures = run.poll()
        except ClusterError as exc:
            # The run cannot go on (its engine failed, sbatch refused the job options): every
            # step out in it fails with the reason; a retry, or a later step, starts a new run.
            log.warning("workflow %s: %s", self.plan.workflow.name, exc)
            self.run = None
            close_run(run, self.settings)
            out, self.on_cluster = list(self.on_cluster), {}
            return [self._settle(s, failure=failure_from_exception(s, exc, kind="backend"))
                    for s in sorted(out, key=self.position.__getitem__)]
        ended: list[StepOutcome | None] = []
        for step_id, value in values:
            file = self.on_cluster.pop(step_id, None)
            if file is not None:
                self.done_on_cluster[step_id] = file
                ended.append(self._settle(step_id, value))
        for failure in failures:
            if self.on_cluster.pop(failure.index, None) is not None:
                ended.append(self._settle(failure.index, failure=failure))
        return ended

    def _settle(self, step_id: int, value: Any = None,
                failure: TaskFailure | None = None) -> StepOutcome | None:
        """The step's outcome to report, or None when it runs again (retry, held back)."""
        if failure is None:
            self.graph.ended[step_id] = True
            self.values[step_id] = value
            return StepOutcome(step_id, value)
        step = self.plan.step(step_id)
        if not step.always and any(self.graph.ended.get(p) is not True
                                   for p in step.prerequisites):
            # Its job never started: a prerequisite failed. That prerequisite's fate (retried,
            # or failed for good) decides this step's, not this "failure".
            self._wait_again([step_id])
            return None
        self._hold_followers(step_id)
        final = self.retries.consider(failure)
        if final is None:
            return None  # due again after its backoff (see outcomes)
        self.graph.ended[step_id] = False
        return StepOutcome(step_id, failure=final)

    def _hold_followers(self, failed: int) -> None:
        """The steps out after ``failed`` (in its round) will not start: soma-workflow holds
        their jobs back. Count them as waiting now, so they go out with a retry of ``failed``
        (or are reported not run), rather than when the round ends."""
        held = {failed}
        for step_id in sorted(self.on_cluster, key=self.position.__getitem__):
            if any(p in held for p in self.plan.step(step_id).prerequisites):
                held.add(step_id)
                del self.on_cluster[step_id]
        if self.run is not None:  # nothing to wait for, or to cancel, in their old jobs
            self.run.forget(held - {failed})
        self._wait_again(sorted(held - {failed}))

