"""How the tasks of an ended cluster job that left no outcome are judged: failed (the job
ran them, or was cancelled) or sent to another round (the job never reached them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from remotemap.backends.cluster import layout
from remotemap.backends.cluster.files import RunFiles
from remotemap.backends.cluster.pilots import ended_well
from remotemap.backends.cluster.rounds import Round
from remotemap.backends.cluster.verdict import JobEnd, describe, job_host, stderr_tail
from remotemap.errors import FailureKind, TaskFailure
from remotemap.execution import lost_chunk_result
from remotemap.pilot import CLAIMED, parse_marker
from remotemap.tasks import Chunk

#: A task that never ran goes to at most this many rounds in all.
MAX_ROUNDS = 2


class ClusterRun(Protocol):
    """What judging reads and changes of a ``runs.ClusterRun`` (which imports this module)."""

    run_id: str
    files: RunFiles
    specs: dict[int, dict[str, Any]]
    file_index: dict[int, int]
    file_rounds: dict[int, list[int]]
    pending: dict[int, int]
    requeue: bool


def judge_job(run: ClusterRun, rnd: Round, number: int, row: Mapping[str, Any],
              missing: list[int], cancelled: bool, requeue: list[tuple[int, int]]
              ) -> list[TaskFailure]:
    """The failures of job ``number``'s tasks without an outcome (``missing``, in the
    order it ran them); tasks it never reached go to ``requeue`` when they may."""
    end = JobEnd.of(row, rnd.scheduler, run.specs[rnd.number], cancelled)
    story = describe(row, rnd.scheduler, layout.job_name(run.run_id, rnd.number, number))
    tail = stderr_tail(run.files.read(layout.job_log_name(rnd.number, number, "err")))
    host = job_host(row, run.files.label)
    first = len(missing) if end.ok else 1 if end.started else 0
    failures: list[TaskFailure] = []
    for file in missing[:first]:  # the tasks it was running when it ended
        index = run.file_index[file]
        del run.pending[index]
        failures += lost_chunk_result(Chunk(file, [index], [], []), f"{end.why} ({story})",
                                      kind=end.kind, host=host, log_tail=tail).failures
    for file in missing[first:]:  # the tasks it never reached
        index = run.file_index[file]
        if (end.resubmit and run.requeue and len(run.file_rounds[file]) < MAX_ROUNDS
                and not cancelled):
            requeue.append((file, index))
            continue
        del run.pending[index]
        reason = (f"the job holding it ended before reaching it: the job {end.why}"
                  if end.started else f"its job {end.why}")
        kind: FailureKind = "cancelled" if cancelled or end.kind == "cancelled" else "lost"
        failures.append(TaskFailure(
            index=index, exception_type="WorkerLost" if kind == "lost" else "Cancelled",
            message=f"task {index} was not run: {reason} ({story})",
            traceback=f"stderr of the job (last lines):\n{tail}" if tail else "",
            host=host, kind=kind))
    return failures



def judge_workers(run: ClusterRun, rnd: Round, rows: list[Mapping[str, Any]],
                  cancelled: bool, requeue: list[tuple[int, int]]) -> list[TaskFailure]:
    """The failures of a round run by worker jobs (``remotemap.pilot``): each task without an
    outcome is judged from the worker job that claimed it last (it was running it when that
    job ended), one never claimed from the last worker job that failed (or the last one)."""
    missing = [file for file, _ in run.specs[rnd.number]["files"]
               if run.pending.get(run.file_index[file]) == file
               and run.file_rounds[file][-1] == rnd.number]
    if not missing:
        return []
    claims: dict[int, tuple[int, int]] = {}  # file -> (attempt, job) of its latest claim
    for name in run.files.listdir(CLAIMED):
        parsed = parse_marker(name)
        if parsed is not None and parsed[0] == rnd.number and parsed[3] is not None:
            _, file, attempt, _ = parsed
            if attempt >= claims.get(file, (-1, 0))[0]:
                claims[file] = (attempt, parsed[3])
    failed = [n for n, row in enumerate(rows) if not ended_well(row)]
    fallback = failed[-1] if failed else max(len(rows) - 1, 0)
    by_job: dict[int, list[int]] = {}
    for file in missing:
        by_job.setdefault(claims.get(file, (0, fallback))[1], []).append(file)
    failures: list[TaskFailure] = []
    for job, files in sorted(by_job.items()):
        row = rows[job] if job < len(rows) else {}
        failures += judge_job(run, rnd, job, row, files, cancelled, requeue)
    return failures
