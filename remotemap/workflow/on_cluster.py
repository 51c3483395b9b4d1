"""``cluster`` workflows: the graph handed to the batch system as job dependencies.

A workflow's steps run in one cluster run directory. They go out in *rounds* (one
soma-workflow workflow each, see ``backends/cluster/runs.py``): a round holds every step that can be
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
from remotemap.driver import Policy, RetrySchedule, Work, dispatch
from remotemap.errors import BackendUnavailable, TaskFailure
from remotemap.execution import failure_from_exception, pickle_function
from remotemap.protocol import chunk_name
from remotemap.session import Session
from remotemap.tasks import Chunk, ChunkResult
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


class _GraphRun(Session, Work):
    """The graph as the one dispatch loop (``driver.dispatch``) sees it: the :class:`Work`
    is the steps that can be placed now (one chunk per step, its id as chunk id), and the
    :class:`Session` sends the steps placed in one turn out as one round (client steps to a
    thread here) and polls the run for the steps that ended."""

    def __init__(self, settings: dict[str, Any], plan: GraphPlan, policy: Policy) -> None:
        self.settings = settings
        self.plan = plan
        self.policy = policy
        self.graph = GraphState(plan)
        self.position = {step_id: i for i, step_id in enumerate(plan.order)}
        self.values: dict[int, Any] = dict(plan.reused)
        #: Steps placed this turn, going out together as the next round.
        self.batch: list[int] = []
        #: Steps out on the cluster -> the chunk file (= outcome file) of their attempt.
        self.on_cluster: dict[int, int] = {}
        #: Steps done on the cluster -> the outcome file holding their value.
        self.done_on_cluster: dict[int, int] = {}
        self.on_client: dict[concurrent.futures.Future[StepOutcome], int] = {}
        self.retries = RetrySchedule(policy)
        self.run: ClusterRun | None = None
        self.client: concurrent.futures.Executor | None = None
        # A batch system has no bound per workflow: max_parallel is the only one.
        self.capacity = plan.max_parallel if plan.max_parallel is not None else 1 << 30
        self.interval = poll_interval(settings)

    def outcomes(self) -> Iterator[StepOutcome]:
        with concurrent.futures.ThreadPoolExecutor(1, "remotemap-client-step") as client:
            self.client = client
            try:
                for result in dispatch(self, self, self.retries):
                    yield from _outcomes(result)
            finally:
                self.close()

    # -- Work: placing steps -------------------------------------------------------------------
    def again(self, indices: list[int]) -> None:
        """Put steps back among those waiting, in the plan's order (prerequisites first)."""
        if indices:
            waiting = {*self.graph.waiting, *indices}
            self.graph.waiting = sorted(waiting, key=self.position.__getitem__)

    def take(self, room: int) -> list[Chunk]:
        """Every step that can go now, up to ``room`` (client steps included)."""
        self.graph.drop_blocked()
        placed: list[int] = []
        chained: set[int] = set()  # steps of this round the ones after them may depend on
        for step_id in list(self.graph.waiting):
            if len(placed) >= room:
                break
            step = self.plan.step(step_id)
            if not self._can_place(step, set() if step.on_client else chained):
                continue
            self.graph.waiting.remove(step_id)
            placed.append(step_id)
            if not step.on_client and self.plan.max_parallel is None and not step.always:
                chained.add(step_id)
        return [Chunk(step_id, [step_id], [()], [{}]) for step_id in placed]

    def ended(self) -> bool:
        if self.graph.waiting:  # cannot happen: a graph's first step is ready
            log.error("workflow %s: steps %s could not be placed",
                      self.plan.workflow.name, self.graph.waiting)
        return True

    def _can_place(self, step: Step, batch: set[int]) -> bool:
        ended = self.graph.ended
        if step.always:
            return all(p in ended for p in step.prerequisites)
        return all(ended.get(p) is True or p in batch for p in step.prerequisites)

    # -- Session: rounds out, outcomes in ------------------------------------------------------
    def submit(self, chunk: Chunk) -> None:
        step = self.plan.step(chunk.id)
        if step.on_client:
            assert self.client is not None
            values = {p: self.values[p] for p in step.uses}
            self.on_client[self.client.submit(run_here, step, values)] = step.id
        else:
            self.batch.append(step.id)

    @property
    def in_flight(self) -> int:
        return len(self.batch) + len(self.on_cluster) + len(self.on_client)

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        """Send this turn's round out; then the steps that ended since the last look, waiting
        a little (the poll interval, or less until the next retry) when none did. Each comes
        back settled (see :meth:`_settle`): a value, or a final failure."""
        if self.batch:
            batch, self.batch = self.batch, []
            settled = [o for o in self._launch(batch) if o is not None]
            if settled:  # failed at once: they may block or free other steps, place again
                return [_as_result(o) for o in settled]
        ended: list[StepOutcome | None] = []
        if self.run is not None and self.on_cluster:
            ended += self._poll(self.run)
        for future in [f for f in self.on_client if f.done()]:
            outcome = future.result()
            del self.on_client[future]
            ended.append(self._settle(outcome.step, outcome.value, outcome.failure))
        settled = [o for o in ended if o is not None]
        if not settled:
            wait = self.interval if timeout is None else min(self.interval, timeout)
            concurrent.futures.wait(self.on_client, wait)
        return [_as_result(o) for o in settled]

    def close(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            close_run(run, self.settings)

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
                self.again([step_id])
        kept = list(job)
        if kept:
            dependencies = [(job[p], job[step_id]) for step_id in kept
                            for p in self.plan.step(step_id).prerequisites if p in job]
            names = {chunk_name(files[s]) for s in kept}
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
            self.again([step_id])
            return None
        self._hold_followers(step_id)
        final = self.retries.consider(failure)
        if final is None:
            return None  # due again after its backoff (the dispatch loop calls again())
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
        self.again(sorted(held - {failed}))



def _as_result(outcome: StepOutcome) -> ChunkResult:
    if outcome.failure is not None:
        return ChunkResult(outcome.step, failures=[outcome.failure])
    return ChunkResult(outcome.step, [outcome.step], [outcome.value])


def _outcomes(result: ChunkResult) -> list[StepOutcome]:
    """The settled outcomes a :meth:`_GraphRun.wait` result carries (the one way back)."""
    return [*(StepOutcome(s, v) for s, v in zip(result.indices, result.values, strict=True)),
            *(StepOutcome(f.index, failure=f) for f in result.failures)]
