"""One cluster run, seen from the caller: its tasks, its rounds of jobs, what came back.

Each task is one chunk file of the run directory (so a job that dies loses nothing its
earlier tasks computed). A *round* is one soma-workflow workflow: its tasks grouped into jobs
of ``tasks_per_job``, each job ``python -m remotemap.worker run RUN_DIR FILE...``, run by one
engine (``engine``) on the submitting host; its files are named in ``layout``. The caller
polls two things, and only files: outcome files (a task's result, streamed back as soon as it
is written) and each round's status file (what soma-workflow knows of each job).

When a round is over, every task of it without an outcome is judged from its job's end
(``verdict.JobEnd``):

* the job ran and ended abnormally: its first task without an outcome was running, and fails
  with the job's story (scheduler job id, state, exit value or signal, stderr tail) - kind
  ``crash``, ``timeout`` (walltime or time limit) or ``cancelled`` (scancel, ``remotemap
  cancel``); the tasks after it never ran and go to a new round (once);
* the job never ran (the round's first job failed, the engine died): its tasks go to a new
  round once, then fail; after a cancel they fail at once, kind ``cancelled``;
* the job could not be submitted: its tasks fail with the scheduler's message;
* the job exited normally but a task left no outcome: that task fails as ``lost``.

Everything is recomputed from the files, so another process (``remotemap collect``) reaches
the same verdicts.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from remotemap.backends.cluster import layout
from remotemap.backends.cluster.files import ClusterError, RunFiles
from remotemap.backends.cluster.judging import judge_job, judge_workers
from remotemap.backends.cluster.pending import count_reasons
from remotemap.backends.cluster.rounds import Round, end_pauses, watch_engine
from remotemap.backends.cluster.settings import engine_env, engine_python, queue_markers, round_spec
from remotemap.capture import merge_outputs
from remotemap.chunk_packs import packed
from remotemap.errors import TamperedFile, TaskFailure, UnsafePath
from remotemap.execution import lost_chunk_result
from remotemap.integrity import new_key
from remotemap.protocol import (
    FUNCTION,
    META,
    OUTCOMES,
    RunLayout,
    chunk_name,
    encode_runnable,
    new_token,
    open_outcome,
    outcome_name,
    seal_file,
    unseal_file,
)
from remotemap.tasks import Chunk, ChunkResult

if TYPE_CHECKING:
    from remotemap.backends.staging import HostStaging
    from remotemap.backends.staging_targets import Target

log = logging.getLogger("remotemap")

#: A round with more jobs than this runs its first job alone first (see build_workflow).
CANARY_ABOVE = 8


class ClusterRun:
    """A run directory and everything known about its rounds (see the module docstring)."""

    def __init__(self, files: RunFiles, meta: dict[str, Any], key: bytes) -> None:
        self.files = files
        self.meta = meta
        #: The run's secret, which seals its pickles (see ``files``).
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
        #: When and by whom each task read from an outcome ran (index -> (start, end), worker).
        self.ran: dict[int, tuple[tuple[float, float], str]] = {}
        #: What tasks printed, from outcomes read but not yet taken (``take_outputs``).
        self.printed = ChunkResult(-1)
        self.next_file = 0
        self.cancelled = False
        self.env: dict[str, str] = dict(meta.get("env") or {})
        #: Whether tasks whose job never reached them go to a new round. A workflow's run
        #: says no: there, a job not run was held back by a failed prerequisite.
        self.requeue = True
        #: Where the tasks' staged inputs go, and how (``session.stage_inputs``).
        self.staging: tuple[HostStaging, Target] | None = None
        #: A worker round holds all but its first chunk until it went well (on_error="stop").
        self.hold_bulk = False

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
                          META: json.dumps(meta).encode()})
        return cls(files, meta, key)

    @classmethod
    def open(cls, files: RunFiles) -> ClusterRun:
        files.verify()  # UnsafePath if another user could have changed what is in it
        meta = files.read_json(META)
        if meta is None:
            raise ClusterError(f"{files.label}:{files.root} holds no cluster run")
        if not meta.get("key_file"):
            raise ClusterError(f"{files.label}:{files.root} was made by an older remotemap "
                               "(no run key): collect it with that version")
        run = cls(files, meta, files.read_key(str(meta["key_file"])))
        numbers = [layout.spec_round(n) for n in files.listdir(layout.ROUNDS)]
        for number in sorted(n for n in numbers if n is not None):
            spec = files.read_json(layout.spec_name(number))
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
        """Stage each task as a chunk file (small ones packed) and start a round with them;
        tasks whose arguments cannot be pickled fail here instead."""
        tasks = list(tasks)
        staged = [(file, *task) for file, task in zip(self.reserve(len(tasks)), tasks,
                                                      strict=True)]
        blobs, files, failures = self.stage(staged)
        if files:
            self.files.write_many(packed({file: blobs[chunk_name(file)] for file, _ in files}))
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
            chunk = Chunk(file, [index], [args], [kwargs])
            if self.staging is not None:  # the inputs first; the task names their copies
                chunk, not_sent = self.staging[0].localize(self.staging[1], chunk, _never)
                failures += not_sent
                if not chunk.indices:
                    continue
            _, data, unpicklable = encode_runnable(self.token, chunk)
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
        number = max(self.rounds, default=-1) + 1
        spec = round_spec(self.settings, run_id=self.run_id, number=number, files=files,
                          env=self.env, task_timeout=task_timeout,
                          function=str(self.meta.get("function", "")))
        spec["key_file"] = self.meta["key_file"]  # the jobs' key: its path, never the key
        if dependencies is None:  # a canary job (build_workflow), or a hold (hold_bulk)
            count = len(spec["files"]) if spec["workers"] else len(spec["jobs"])
            spec["canary"] = count > CANARY_ABOVE and (self.hold_bulk or not spec["workers"])
        else:
            spec.update(jobs=[[file] for file, _ in files], canary=False, fail_exit=True,
                        dependencies=[list(pair) for pair in dependencies], dispatch="jobs")
        self.files.write_markers(number, queue_markers(spec))  # before the spec names them
        self.files.write_many({layout.spec_name(number): json.dumps(spec).encode()})
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
        ended: list[Round] = []
        for rnd in self.rounds.values():
            if rnd.judged:
                continue
            self._read_status(rnd)
            if rnd.status and rnd.status.get("state") == "error":
                raise ClusterError(f"{self.files.label}: {rnd.status.get('error')}")
            if rnd.ended:
                ended.append(rnd)
            else:
                watch_engine(rnd, self.files, self.run_id, self.settings)
        # Outcomes after statuses: a job writes its outcomes before the scheduler sees it end.
        values, failures = self._read_outcomes()
        requeue: list[tuple[int, int]] = []
        for rnd in ended:
            failures += self._judge(rnd, requeue)
            rnd.judged = True
        if requeue and not self.cancelled:
            self.start_round(requeue, task_timeout=self._timeout())
        return values, failures

    def snapshot(self) -> tuple[list[tuple[int, Any]], list[TaskFailure]]:
        """What :meth:`poll` would resolve now, without starting a round or an engine: a
        task a new round would run stays pending (``remotemap runs show``, ``load_run``)."""
        ended = [rnd for rnd in self.rounds.values() if self._read_status(rnd).get("ended")]
        values, failures = self._read_outcomes()
        for rnd in ended:
            failures += self._judge(rnd, [])
        return values, failures

    def _read_status(self, rnd: Round) -> dict[str, Any]:
        """The round's latest status (the last one read while it is being rewritten)."""
        rnd.status = self.files.read_json(layout.status_name(rnd.number)) or rnd.status
        return rnd.status or {}

    def _read_outcomes(self) -> tuple[list[tuple[int, Any]], list[TaskFailure]]:
        """The results in outcome files not seen yet, of tasks still pending."""
        values: list[tuple[int, Any]] = []
        failures: list[TaskFailure] = []
        new = {}  # outcome file -> its number, for the names protocol.outcome_name gives
        for name in sorted(set(self.files.listdir(OUTCOMES)) - self.seen):  # new names only
            stem, rel = name.partition(".")[0], posixpath.join(OUTCOMES, name)
            if stem.isdigit() and rel == outcome_name(int(stem)):
                new[rel] = int(stem)
        for rel, data in self.files.read_many(list(new)).items():
            file = new[rel]
            self.seen.add(rel.rpartition("/")[2])
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
            self.ran.update((i, (t, result.worker)) for i, t in result.task_times().items())
            merge_outputs(self.printed, result)
        return values, failures

    def take_times(self, result: ChunkResult) -> None:
        """Move when and by whom the tasks of ``result`` ran (read with their outcomes) into it."""
        for index in [*result.indices, *(f.index for f in result.failures)]:
            if index in self.ran:
                result.timings[index], result.worker = self.ran.pop(index)

    def take_outputs(self, result: ChunkResult) -> None:
        """Move what the tasks of ``result`` printed (read with their outcomes) into it."""
        for index in [*result.indices, *(f.index for f in result.failures)]:
            if index in self.printed.outputs:
                result.outputs[index] = self.printed.outputs.pop(index)
            if index in self.printed.stderr_spans:
                result.stderr_spans[index] = self.printed.stderr_spans.pop(index)

    def _timeout(self) -> float | None:
        last = self.specs[max(self.specs)] if self.specs else {}
        value = last.get("task_timeout")
        return float(value) if value else None

    def _judge(self, rnd: Round, requeue: list[tuple[int, int]]) -> list[TaskFailure]:
        """Fail or requeue each task of an ended round that left no outcome."""
        status = rnd.status or {}
        rows = status.get("jobs") or []
        cancelled = self.cancelled or status.get("state") == "cancelled"
        if self.specs[rnd.number].get("dispatch") == "workers":
            return judge_workers(self, rnd, rows, cancelled, requeue)
        failures: list[TaskFailure] = []
        for number, job_files in enumerate(rnd.jobs):
            missing = [f for f in job_files if self.pending.get(self.file_index[f]) == f
                       and self.file_rounds[f][-1] == rnd.number]
            if missing:
                row = rows[number] if number < len(rows) else {}
                failures += judge_job(self, rnd, number, row, missing, cancelled, requeue)
        return failures

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
            self._read_status(rnd)
            if not rnd.ended:
                self.files.write_many({layout.cancel_name(rnd.number): b"cancel\n"})
                if self.files.engine_running(rnd.number) is False:
                    watch_engine(rnd, self.files, self.run_id, self.settings)

    def wait_ended(self, timeout: float) -> bool:
        """Wait until every round is over and its engine exited; False on timeout."""
        deadline, pauses = time.monotonic() + timeout, end_pauses(self.settings)
        while True:
            for rnd in [r for r in self.rounds.values() if not r.exited]:
                self._read_status(rnd)
                if rnd.ended and self.files.engine_running(rnd.number) is False:
                    rnd.status = dict(rnd.status or {}, exited=True)
                if not rnd.ended:
                    try:
                        watch_engine(rnd, self.files, self.run_id, self.settings)
                    except (ClusterError, UnsafePath):  # no engine can be started again there
                        return False
            if all(r.exited for r in self.rounds.values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(next(pauses))

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each soma-workflow state, over every round."""
        counts: dict[str, int] = {}
        for rnd in self.rounds.values():
            status = self.files.read_json(layout.status_name(rnd.number)) or {}
            rows = status.get("jobs") or []
            for number in range(max(len(rnd.jobs), len(rows))):  # + worker jobs added
                row = rows[number] if number < len(rows) else {}
                state = str(row.get("status") or status.get("state") or "starting")
                counts[state] = counts.get(state, 0) + 1
        return counts

    def pending_reasons(self, *, fresh: bool = False) -> dict[str, int]:
        """How many queued jobs of rounds not over wait for each of SLURM's pending reasons
        (``pending``), from the statuses last read (``fresh``: read them now)."""
        counts: dict[str, int] = {}
        for rnd in self.rounds.values():
            status = self._read_status(rnd) if fresh else rnd.status or {}
            if not status.get("ended"):
                for reason, n in count_reasons(status.get("jobs") or []).items():
                    counts[reason] = counts.get(reason, 0) + n
        return counts

    def outcome_count(self) -> int:
        return len([n for n in self.files.listdir("outcomes") if n.endswith(".pkl")])


def _never() -> bool:
    return False  # staging for a cluster run is never stopped half-way by a closing session
