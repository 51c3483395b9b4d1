"""One cluster run, seen from the caller: its tasks, its rounds of jobs, what came back.

Each task is one chunk file of the run directory (so a job that dies loses nothing its
earlier tasks computed). A *round* is one soma-workflow workflow: its tasks grouped into jobs
of ``tasks_per_job``, each job ``python -m remotemap.worker run RUN_DIR FILE...``, run by one
engine (``cluster_engine``) on the submitting host. The caller polls two things, and only
files: outcome files (a task's result, streamed back as soon as it is written) and each
round's status file (what soma-workflow knows of each job).

When a round is over, every task of it without an outcome is judged from its job's end:

* the job ran and ended abnormally: its first task without an outcome was running, and fails
  with the job's story (scheduler job id, state, exit value or signal, stderr tail) - kind
  ``crash``, ``timeout`` (walltime or time limit) or ``cancelled`` (scancel, ``remotemap
  cancel``); the tasks after it never ran and go to a new round (once);
* the job never ran (the round's first job failed, the engine died): its tasks go to a new
  round once, then fail;
* the job could not be submitted: its tasks fail with the scheduler's message;
* the job exited normally but a task left no outcome: that task fails as ``lost``.

Everything is recomputed from the files, so another process (``remotemap collect``) reaches
the same verdicts.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotemap.backends.cluster_files import ClusterError, RunFiles, engine_env, engine_python
from remotemap.errors import FailureKind, TamperedFile, TaskFailure, UnsafePath
from remotemap.execution import lost_chunk_result
from remotemap.integrity import new_key
from remotemap.protocol import (
    FUNCTION,
    RunLayout,
    chunk_name,
    encode_runnable,
    exit_status_text,
    new_token,
    open_outcome,
    seal_file,
    unseal_file,
)
from remotemap.tasks import Chunk

log = logging.getLogger("remotemap")

#: A task that never ran goes to at most this many rounds in all.
MAX_ROUNDS = 2
#: A round with more jobs than this runs its first job alone first (see build_workflow).
CANARY_ABOVE = 8
#: Seconds without a heartbeat (status rewritten) before an engine counts as dead.
STALE_AFTER = 20.0
#: Seconds an engine may take to write its first status.
START_TIMEOUT = 60.0
#: Times a dead engine is restarted for one round before the run gives up.
MAX_RESTARTS = 3


@dataclass
class Round:
    number: int
    jobs: list[list[int]]
    scheduler: str
    started: float = field(default_factory=time.monotonic)
    status: dict[str, Any] | None = None
    judged: bool = False
    heartbeat: tuple[float, float] = (0.0, 0.0)  # (value seen, local time it changed)
    restarts: int = 0

    @property
    def ended(self) -> bool:
        return bool(self.status and self.status.get("ended"))

    @property
    def exited(self) -> bool:
        """Over, and its engine process gone (or not heard of for a while)."""
        if not self.status or not self.status.get("ended"):
            return False
        if self.status.get("exited") or self.status.get("state") in ("abandoned", "error"):
            return True
        return time.time() - float(self.status.get("heartbeat") or 0) > 15.0


def _usage(row: Mapping[str, Any], key: str) -> str:
    match = re.search(rf"\b{key}=(\S+)", str(row.get("usage") or ""))
    return match.group(1) if match else ""


@dataclass(frozen=True)
class JobEnd:
    """How one job ended, in remotemap's words."""

    kind: FailureKind  # for the task it was running: crash, timeout, cancelled, lost
    why: str  # completes "the worker process running task N ..."
    started: bool  # it ran, so its first task without an outcome is to blame
    ok: bool = False  # it exited normally
    resubmit: bool = True  # its tasks that never ran may go to a new round

    @staticmethod
    def of(row: Mapping[str, Any], scheduler: str, spec: Mapping[str, Any],
           cancelled: bool) -> JobEnd:
        status, exit_status = row.get("status"), row.get("exit_status")
        value, signal, drms = row.get("exit_value"), row.get("signal"), row.get("drms")
        slurm_state = _usage(row, "slurm_state")
        again = not cancelled
        if status not in ("done", "failed"):
            return JobEnd("cancelled" if cancelled else "lost",
                          f"was never started (job status {status or 'unknown'})", False,
                          resubmit=again)
        if exit_status == "aborted_before_running":
            return JobEnd("lost", "was not started: the round's first job failed", False,
                          resubmit=again)
        if exit_status == "killed_by_user":
            return JobEnd("cancelled", "was cancelled (scancel, qdel or remotemap cancel)",
                          drms is not None, resubmit=False)
        if exit_status == "aborted" and drms is None:
            return JobEnd("lost", f"could not be submitted to {scheduler}", False,
                          resubmit=False)
        if exit_status == "aborted":
            if slurm_state == "TIMEOUT":
                return JobEnd("timeout", "exceeded the job's walltime (cluster.walltime; "
                              "SLURM state TIMEOUT)", True, resubmit=again)
            state = slurm_state or "unknown"
            return JobEnd("crash", f"was ended by the scheduler (state {state})", True,
                          resubmit=again)
        if exit_status == "finished_signal" and signal:
            return JobEnd("crash", exit_status_text(f"signal:{int(signal)}"), True,
                          resubmit=again)
        if exit_status == "finished_regularly" and isinstance(value, int):
            if value == 0:
                return JobEnd("lost", "exited without writing its outcome", True, ok=True,
                              resubmit=False)
            if value < 0:
                return JobEnd("crash", exit_status_text(f"signal:{-value}"), True,
                              resubmit=again)
            if value == 124 and (spec.get("task_timeout") or spec.get("wrapper_walltime")):
                what = ("its timeout" if spec.get("task_timeout")
                        else "the job's walltime (cluster.walltime)")
                return JobEnd("timeout", f"was killed after exceeding {what}", True,
                              resubmit=again)
            return JobEnd("crash", exit_status_text(f"exit:{value}"), True, resubmit=again)
        return JobEnd("lost", f"ended with exit status {exit_status}", True, resubmit=again)


def describe(row: Mapping[str, Any], scheduler: str, name: str) -> str:
    """The scheduler's view of a job, for failure messages."""
    parts = [f"{scheduler} job {row.get('drms') if row.get('drms') is not None else '-'} "
             f"{name}", f"status {row.get('status')}", f"exit status {row.get('exit_status')}"]
    if row.get("exit_value") is not None:
        parts.append(f"exit value {row.get('exit_value')}")
    if row.get("signal"):
        parts.append(f"signal {row.get('signal')}")
    for key in ("slurm_state", "node"):
        if _usage(row, key) and _usage(row, key) != "-":
            parts.append(f"{key.replace('_', ' ')} {_usage(row, key)}")
    return ", ".join(parts)


def stderr_tail(data: bytes | None, lines: int = 20) -> str:
    """The end of a job's stderr, without srun's and slurmstepd's own lines."""
    text = (data or b"").decode(errors="replace").splitlines()
    kept = [line for line in text if not line.startswith(("srun:", "slurmstepd"))]
    return "\n".join(kept[-lines:])


class ClusterRun:
    """A run directory and everything known about its rounds (see the module docstring)."""

    def __init__(self, files: RunFiles, meta: dict[str, Any], key: bytes) -> None:
        self.files = files
        self.meta = meta
        #: The run's secret, which seals its pickles (see ``cluster_files``).
        self.key = key
        self.run_id: str = meta["run_id"]
        self.token: str = meta["token"]
        self.settings: dict[str, Any] = meta["settings"]
        self.rounds: dict[int, Round] = {}
        self.specs: dict[int, dict[str, Any]] = {}
        self.file_index: dict[int, int] = {}
        self.file_rounds: dict[int, list[int]] = {}
        self.pending: dict[int, int] = {}  # task index -> the file that will resolve it
        self.seen: set[str] = set()
        self.next_file = 0
        self.cancelled = False
        self.env: dict[str, str] = dict(meta.get("env") or {})
        #: Whether tasks whose job never reached them go to a new round. A workflow's run
        #: says no: there, a job not run was held back by a failed prerequisite.
        self.requeue = True

    # -- making and reopening -----------------------------------------------------------------
    @classmethod
    def create(cls, files: RunFiles, run_id: str, settings: dict[str, Any], blob: bytes, *,
               function: str, env: Mapping[str, str], n_tasks: int | None) -> ClusterRun:
        files.make()
        key = new_key()
        meta = {"run_id": run_id, "token": new_token(), "settings": settings, "env": dict(env),
                "function": function, "n_tasks": n_tasks, "root": files.root,
                "created": time.time(), "key_file": files.write_key(run_id, key)}
        files.write_many({FUNCTION: seal_file(key, FUNCTION, blob),
                          "run.json": json.dumps(meta).encode()})
        return cls(files, meta, key)

    @classmethod
    def open(cls, files: RunFiles) -> ClusterRun:
        files.verify()  # UnsafePath if another user could have changed what is in it
        meta = files.read_json("run.json")
        if meta is None:
            raise ClusterError(f"{files.label}:{files.root} holds no cluster run")
        if not meta.get("key_file"):
            raise ClusterError(f"{files.label}:{files.root} was made by an older remotemap "
                               "(no run key): collect it with that version")
        run = cls(files, meta, files.read_key(str(meta["key_file"])))
        names = [n for n in files.listdir("rounds") if re.fullmatch(r"\d+\.json", n)]
        for name in sorted(names, key=lambda n: int(n.split(".")[0])):
            spec = files.read_json(f"rounds/{name}")
            if spec is not None:
                run._add_round(spec)
        return run

    def _add_round(self, spec: dict[str, Any]) -> Round:
        number = int(spec["round"])
        self.specs[number] = spec
        for file, index in spec["files"]:
            self.file_index[file] = index
            self.file_rounds.setdefault(file, []).append(number)
            self.pending[index] = file
            self.next_file = max(self.next_file, file + 1)
        self.rounds[number] = Round(number, spec["jobs"], spec["scheduler"])
        return self.rounds[number]

    # -- submitting ---------------------------------------------------------------------------
    def add_tasks(self, tasks: Iterable[tuple[int, tuple[Any, ...], dict[str, Any]]],
                  *, task_timeout: float | None = None) -> list[TaskFailure]:
        """Stage each task as a chunk file and start a round with them; tasks whose
        arguments cannot be pickled fail here instead."""
        tasks = list(tasks)
        staged = [(file, *task) for file, task in zip(self.reserve(len(tasks)), tasks,
                                                      strict=True)]
        blobs, files, failures = self.stage(staged)
        if files:
            self.files.write_many(blobs)
            self.start_round(files, task_timeout=task_timeout)
        return failures

    def reserve(self, count: int) -> list[int]:
        """Numbers for ``count`` new chunk files (a task's outcome file has its number)."""
        numbers = list(range(self.next_file, self.next_file + count))
        self.next_file += count
        return numbers

    def outcome_path(self, file: int) -> str:
        return RunLayout(self.files.root).outcome(file)

    def stage(self, tasks: Iterable[tuple[int, int, tuple[Any, ...], dict[str, Any]]]
              ) -> tuple[dict[str, bytes], list[tuple[int, int]], list[TaskFailure]]:
        """Encode ``(file, index, args, kwargs)`` tasks: the chunk files to write, the
        ``(file, index)`` pairs encoded, and the failures of tasks that cannot be pickled."""
        blobs: dict[str, bytes] = {}
        failures: list[TaskFailure] = []
        files: list[tuple[int, int]] = []
        for file, index, args, kwargs in tasks:
            _, data, unpicklable = encode_runnable(self.token,
                                                   Chunk(file, [index], [args], [kwargs]))
            failures += unpicklable
            if data is not None:
                blobs[chunk_name(file)] = seal_file(self.key, chunk_name(file), data)
                files.append((file, index))
        return blobs, files, failures

    def start_round(self, files: list[tuple[int, int]], *, task_timeout: float | None = None,
                    dependencies: list[tuple[int, int]] | None = None) -> None:
        """Start a round running ``files``. With ``dependencies`` (pairs of positions in
        ``files``: the second runs once the first ended well) each file is its own job, and a
        job whose task failed holds back the jobs after it."""
        from remotemap.backends.cluster import round_spec

        number = max(self.rounds, default=-1) + 1
        spec = round_spec(self.settings, run_id=self.run_id, number=number, files=files,
                          env=self.env, task_timeout=task_timeout,
                          function=str(self.meta.get("function", "")))
        spec["key_file"] = self.meta["key_file"]  # the jobs' key: its path, never the key
        if dependencies is None:
            spec["canary"] = len(spec["jobs"]) > CANARY_ABOVE
        else:
            spec.update(jobs=[[file] for file, _ in files], canary=False, fail_exit=True,
                        dependencies=[list(pair) for pair in dependencies])
        self.files.write_many({f"rounds/{number}.json": json.dumps(spec).encode()})
        self._add_round(spec)
        self.files.engine(engine_python(self.settings), number, engine_env(self.settings))
        log.debug("cluster run %s: round %d, %d tasks in %d jobs", self.run_id, number,
                  len(files), len(spec["jobs"]))

    def forget(self, indices: Iterable[int]) -> None:
        """Stop waiting for these tasks: their jobs will not run them (a workflow's steps
        after a failed one). A task staged again later is followed in its new job."""
        for index in indices:
            self.pending.pop(index, None)

    # -- following ----------------------------------------------------------------------------
    def poll(self) -> tuple[list[tuple[int, Any]], list[TaskFailure]]:
        """What was resolved since the last call: (index, value) pairs, and failures."""
        values: list[tuple[int, Any]] = []
        failures: list[TaskFailure] = []
        ended: list[Round] = []
        for rnd in self.rounds.values():
            if rnd.judged:
                continue
            rnd.status = self.files.read_json(f"rounds/{rnd.number}.status.json") or rnd.status
            if rnd.status and rnd.status.get("state") == "error":
                raise ClusterError(f"{self.files.label}: {rnd.status.get('error')}")
            if rnd.ended:
                ended.append(rnd)
            else:
                self._watch_engine(rnd)
        # Outcomes after statuses: a job writes its outcomes before the scheduler sees it end.
        new = [n for n in self.files.listdir("outcomes")
               if n.endswith(".pkl") and n not in self.seen]
        for name, data in self.files.read_many([f"outcomes/{n}" for n in new]).items():
            self.seen.add(name.rpartition("/")[2])
            file = int(name.rpartition("/")[2].split(".")[0])
            index = self.file_index.get(file)
            if index is None or self.pending.get(index) != file:
                continue
            try:
                result = open_outcome(self.key, file, data, self.token,
                                      f"{self.files.label}:{self.outcome_path(file)}")
            except TamperedFile as exc:  # never unpickled: the task fails, naming the file
                del self.pending[index]
                failures += lost_chunk_result(
                    Chunk(file, [index], [], []), f"left an outcome that was refused: {exc}",
                    kind="tampered", host=self.files.label).failures
                continue
            if result is None:
                continue
            del self.pending[index]
            values += zip(result.indices, result.values, strict=True)
            failures += result.failures
        requeue: list[tuple[int, int]] = []
        for rnd in ended:
            failures += self._judge(rnd, requeue)
            rnd.judged = True
        if requeue and not self.cancelled:
            self.start_round(requeue, task_timeout=self._timeout())
        return values, failures

    def _timeout(self) -> float | None:
        last = self.specs[max(self.specs)] if self.specs else {}
        value = last.get("task_timeout")
        return float(value) if value else None

    def _judge(self, rnd: Round, requeue: list[tuple[int, int]]) -> list[TaskFailure]:
        status = rnd.status or {}
        spec = self.specs[rnd.number]
        rows = status.get("jobs") or []
        cancelled = self.cancelled or status.get("state") == "cancelled"
        failures: list[TaskFailure] = []
        for number, job_files in enumerate(rnd.jobs):
            missing = [f for f in job_files if self.pending.get(self.file_index[f]) == f
                       and self.file_rounds[f][-1] == rnd.number]
            if not missing:
                continue
            row = rows[number] if number < len(rows) else {}
            end = JobEnd.of(row, rnd.scheduler, spec, cancelled)
            name = f"rm-{self.run_id}-{rnd.number}-{number}"
            story = describe(row, rnd.scheduler, name)
            tail = stderr_tail(self.files.read(f"logs/job-{rnd.number}-{number}.err"))
            host = _usage(row, "node") if _usage(row, "node") not in ("", "-") else (
                self.files.label)
            if end.ok:
                blamed, rest = missing, []
            elif end.started:
                blamed, rest = missing[:1], missing[1:]
            else:
                blamed, rest = [], missing
            for file in blamed:
                index = self.file_index[file]
                del self.pending[index]
                chunk = Chunk(file, [index], [], [])
                failures += lost_chunk_result(chunk, f"{end.why} ({story})", kind=end.kind,
                                              host=host, log_tail=tail).failures
            for file in rest:
                index = self.file_index[file]
                if (end.resubmit and self.requeue and len(self.file_rounds[file]) < MAX_ROUNDS
                        and not cancelled):
                    requeue.append((file, index))
                    continue
                del self.pending[index]
                reason = (f"the job holding it ended before reaching it: the job {end.why}"
                          if end.started else f"its job {end.why}")
                kind: FailureKind = "cancelled" if cancelled or end.kind == "cancelled" else "lost"
                failures.append(TaskFailure(
                    index=index, exception_type="WorkerLost" if kind == "lost" else "Cancelled",
                    message=f"task {index} was not run: {reason} ({story})",
                    traceback=f"stderr of the job (last lines):\n{tail}" if tail else "",
                    host=host, kind=kind))
        return failures

    def _watch_engine(self, rnd: Round) -> None:
        """Replace a dead engine (or say why it never started)."""
        now = time.monotonic()
        beat = float((rnd.status or {}).get("heartbeat") or 0.0)
        if beat != rnd.heartbeat[0]:
            rnd.heartbeat = (beat, now)
        running = self.files.engine_running(rnd.number)
        if running is None:  # only the heartbeat tells
            last = rnd.heartbeat[1] if rnd.status else rnd.started
            running = now - last < (STALE_AFTER if rnd.status else START_TIMEOUT)
        if running:
            return
        if rnd.status is None and now - rnd.started < 10.0:
            return  # just started: it may not have taken its lock yet
        if rnd.status is None and rnd.restarts >= 1:
            tail = stderr_tail(self.files.read(f"rounds/{rnd.number}.log"), 5)
            raise ClusterError(f"{self.files.label}: the cluster engine of run {self.run_id} "
                               f"did not start: {tail or 'no output'}")
        if rnd.scheduler == "local" and rnd.status is not None:
            # The local scheduler's jobs were the dead engine's children: nothing to adopt.
            status = dict(rnd.status, ended=True, state="abandoned")
            self.files.write_many({f"rounds/{rnd.number}.status.json":
                                   json.dumps(status).encode()})
            rnd.status = status
            return
        if rnd.restarts >= MAX_RESTARTS:
            raise ClusterError(f"{self.files.label}: the cluster engine of run {self.run_id} "
                               f"round {rnd.number} died {rnd.restarts + 1} times; see "
                               f"{self.files.root}/rounds/{rnd.number}.log")
        rnd.restarts += 1
        rnd.started = now
        rnd.heartbeat = (rnd.heartbeat[0], now)
        log.warning("cluster run %s: the engine of round %d is gone; starting another "
                    "(it adopts the submitted jobs)", self.run_id, rnd.number)
        self.files.engine(engine_python(self.settings), rnd.number, engine_env(self.settings))

    # -- sealed files of the caller's own, and removal ------------------------------------------
    def write_sealed(self, rel: str, data: bytes) -> None:
        self.files.write_many({rel: seal_file(self.key, rel, data)})

    def read_sealed(self, rel: str) -> memoryview | None:
        """The checked content of ``rel`` (None if missing; TamperedFile if not sealed here)."""
        blob = self.files.read(rel)
        return None if blob is None else unseal_file(self.key, rel, blob,
                                                     f"{self.files.label}:{self.files.root}/{rel}")

    def remove(self) -> None:
        """Delete the run directory and the run's key file."""
        self.files.remove()
        self.files.remove_key(str(self.meta["key_file"]))

    # -- stopping -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask every unfinished round's engine to stop its jobs (and start one if it died)."""
        self.cancelled = True
        for rnd in self.rounds.values():
            rnd.status = self.files.read_json(f"rounds/{rnd.number}.status.json") or rnd.status
            if not rnd.ended:
                self.files.write_many({f"rounds/{rnd.number}.cancel": b"cancel\n"})
                if self.files.engine_running(rnd.number) is False:
                    self._watch_engine(rnd)

    def wait_ended(self, timeout: float) -> bool:
        """Wait until every round is over and its engine exited; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for rnd in [r for r in self.rounds.values() if not r.exited]:
                rnd.status = (self.files.read_json(f"rounds/{rnd.number}.status.json")
                              or rnd.status)
                if rnd.ended and self.files.engine_running(rnd.number) is False:
                    rnd.status = dict(rnd.status or {}, exited=True)
                if not rnd.ended:
                    try:
                        self._watch_engine(rnd)
                    except (ClusterError, UnsafePath):  # no engine can be started again there
                        return False
            if all(r.exited for r in self.rounds.values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05 if self.files.label == "localhost" else 0.3)

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each soma-workflow state, over every round."""
        counts: dict[str, int] = {}
        for rnd in self.rounds.values():
            status = self.files.read_json(f"rounds/{rnd.number}.status.json") or {}
            rows = status.get("jobs") or []
            for number in range(len(rnd.jobs)):
                row = rows[number] if number < len(rows) else {}
                state = str(row.get("status") or status.get("state") or "starting")
                counts[state] = counts.get(state, 0) + 1
        return counts

    def outcome_count(self) -> int:
        return len([n for n in self.files.listdir("outcomes") if n.endswith(".pkl")])

