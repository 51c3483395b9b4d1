"""The engine's side of a round run by worker jobs (``cluster.dispatch = "workers"``).

Worker jobs claim chunks from the round's queue (``remotemap.pilot``). The engine, each tick,
gives the claims of every worker job that ended back to the queue when they have no outcome
(a worker killed mid-chunk loses only that chunk), and when chunks wait while no worker job
is queued or running - every worker stopped claiming before its walltime, or died - submits
more worker jobs, as workflows of their own. It stops submitting when a worker job failed
without ever claiming a chunk (a wrong ``cluster.python``, remotemap missing on the nodes):
then every later one would fail too, and the caller judges what is left from that job.

Once no chunk waits, worker jobs still queued are dropped (``stop_unstarted``).

Imported by the engine after it detached (it loads soma-workflow through ``swf``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from remotemap.backends.cluster.verdict import DONE, FAILED, FINISHED_REGULARLY, QUEUED_ACTIVE
from remotemap.pilot import (
    CLAIMED,
    PilotQueue,
    held_name,
    make_markers,
    marker_source,
    parse_marker,
    queue_marker,
)


class Engine(Protocol):
    """What the keeper reads and writes of ``engine.Engine`` (which imports this module)."""

    root: str
    rnd: int
    spec: dict[str, Any]
    status: dict[str, Any]

    def save(self, **changes: Any) -> None: ...

#: soma-workflow statuses of a job that ended.
ENDED = frozenset({DONE, FAILED})
#: ... and of one not started yet (soma-workflow has not submitted it, or it is queued).
UNSTARTED = frozenset({"not_submitted", "submission_pending", QUEUED_ACTIVE})


def has_outcome(root: str, file: int) -> bool:
    from remotemap.protocol import outcome_name

    return os.path.exists(os.path.join(root, outcome_name(file)))


class Keeper:
    """Requeues the claims of ended worker jobs and submits more worker jobs when needed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue = PilotQueue(engine.root, engine.rnd)
        status = engine.status
        self.handled: set[int] = set(status.get("pilot_handled") or [])
        self.claimers: set[int] = set(status.get("pilot_claimers") or [])
        self.gave_up: bool = bool(status.get("pilot_gave_up"))
        self.stopped: set[int] = set(status.get("pilot_stopped") or [])  # never started
        self.canary_seen = 0.0  # when the canary chunk's outcome was first seen

    def _note_claimers(self) -> None:
        for name in os.listdir(os.path.join(self.engine.root, CLAIMED)):
            parsed = parse_marker(name)
            if parsed is not None and parsed[0] == self.engine.rnd and parsed[3] is not None:
                self.claimers.add(parsed[3])

    def tick(self, wfc: Any, jobs: list[dict[str, Any]]) -> bool:
        """One look at the worker jobs' rows; True when the round needs no more worker."""
        self.release()
        ended = {n for n, row in enumerate(jobs) if row.get("status") in ENDED}
        new = ended - self.handled
        if new:
            self._note_claimers()  # before requeue moves the dead workers' markers away
            self.queue.requeue(new, lambda file: has_outcome(self.engine.root, file))
            self.handled |= new
            self.gave_up = self.gave_up or any(
                not ended_well(jobs[n]) and n not in self.claimers | self.stopped for n in new)
            self.engine.save(pilot_handled=sorted(self.handled),
                             pilot_claimers=sorted(self.claimers), pilot_gave_up=self.gave_up)
        waiting = len(self.queue.waiting())
        idle = not waiting and not self.queue.held()
        if idle:
            self.stop_unstarted(wfc, jobs)
        if len(ended) < len(jobs) or self.gave_up:
            return len(ended) == len(jobs)
        if idle:
            return True
        slots = max(1, int(self.engine.spec.get("slots") or 1))  # never more loops than chunks
        self.submit(wfc, max(1, min(int(self.engine.spec["workers"]), -(-waiting // slots))))
        return False

    def stop_unstarted(self, wfc: Any, jobs: list[dict[str, Any]]) -> None:
        """Drop the worker jobs still queued once no chunk waits: they would only start to
        find nothing to claim, and on a busy cluster the round would wait hours for that.
        Safe: only this engine puts chunks in the queue, and it has just seen none there, so
        a job that holds no claim now can claim nothing later (a chunk requeued later gets
        new workers once these have ended)."""
        unstarted = {n for n, row in enumerate(jobs)
                     if row.get("status") in UNSTARTED and n not in self.stopped}
        if not unstarted:
            return
        # soma-workflow's status lags: a job it still calls queued may be running, and may
        # have claimed the last chunks (which is why none waits). One that holds a claim runs.
        self._note_claimers()
        unstarted -= self.claimers
        if not unstarted:
            return
        self.stopped |= unstarted
        self.engine.save(pilot_stopped=sorted(self.stopped))
        by_workflow: dict[int, list[int]] = {}
        for n in unstarted:
            by_workflow.setdefault(int(jobs[n]["wf"]), []).append(
                int(self.engine.status["swf_ids"][n]))
        for wf_id, ids in by_workflow.items():
            # stop_jobs waits for the scheduler to confirm: not in the engine's loop.
            threading.Thread(target=wfc.stop_jobs, args=(wf_id, ids), daemon=True).start()

    def release(self) -> None:
        """Put the held chunks in the queue once the canary chunk (the round's first) has its
        outcome and the caller had :func:`hold_seconds` to stop the run: ``on_error="stop"``
        then stops before the bulk starts, as the canary job does under ``dispatch="jobs"``."""
        if not self.queue.held():
            return
        root, spec = self.engine.root, self.engine.spec
        files = [int(file) for file, _ in spec["files"]]
        if not has_outcome(root, files[0]):
            return
        now = time.monotonic()
        self.canary_seen = self.canary_seen or now
        if now - self.canary_seen < hold_seconds(spec):
            return
        taken = set(self.queue.claims())  # an engine restarted mid-release: not twice
        make_markers(root, [queue_marker(self.engine.rnd, file) for file in files[1:]
                            if file not in taken and not has_outcome(root, file)],
                     marker_source(self.engine.rnd))
        os.unlink(os.path.join(root, held_name(self.engine.rnd)))

    def submit(self, wfc: Any, count: int) -> None:
        from remotemap.backends.cluster import swf

        first = len(self.engine.status["swf_ids"])
        workflow, jobs = swf.worker_workflow(self.engine.spec, self.engine.root,
                                             range(first, first + count))
        wf_id = wfc.submit_workflow(workflow, name=workflow.name,
                                    queue=self.engine.spec.get("queue") or None)
        self.engine.save(more_wf_ids=[*(self.engine.status.get("more_wf_ids") or []), wf_id],
                         swf_ids=[*self.engine.status["swf_ids"],
                                  *swf.job_ids(wfc, wf_id, jobs)])


def hold_seconds(spec: Mapping[str, Any]) -> float:
    """Seconds the held chunks wait after the canary's outcome: about what the canary job
    takes to be seen ended under ``dispatch="jobs"`` (one ``poll_interval``), at least 1."""
    return max(1.0, float(spec.get("poll_interval", 1.0)))


def ended_well(row: Mapping[str, Any]) -> bool:
    return (row.get("status") == DONE and row.get("exit_status") == FINISHED_REGULARLY
            and not row.get("exit_value"))
