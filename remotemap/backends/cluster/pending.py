"""Why a run's jobs wait: SLURM's pending reason of each queued job.

soma-workflow says only ``queued_active`` of a job SLURM holds back. The engine, on the
submitting host, asks ``squeue`` for the reason of its queued jobs (:func:`squeue_reasons`)
and writes it into the job's row of the round's status (key ``reason``); the caller reads it
there (``ClusterRun.pending_reasons``) for its progress bar, its log and ``remotemap status``.

Light (the standard library only): the engine imports it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping

#: soma-workflow's status of a job the scheduler holds in its queue.
QUEUED = "queued_active"
#: Reasons that only say the job waits its turn: logged at INFO. Any other (a limit, a
#: partition down, a hold) may never resolve: logged as a WARNING, which prints by default.
ORDINARY = frozenset({"None", "Priority", "Resources", "BeginTime", "Dependency"})
#: What the reasons that hold a job for ever mean, and what to do.
HINTS = {
    "PartitionTimeLimit": "its walltime is above the partition's MaxTime",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "MaxMemPerLimit": "its memory is above the partition's MaxMemPerNode/MaxMemPerCPU",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "JobHeldAdmin": "an administrator holds it",
    "JobHeldUser": "it is held (scontrol release JOBID)",
}


def parse_squeue(text: str) -> dict[str, tuple[str, str]]:
    """``squeue -h -o '%i|%T|%r'`` output: job id -> (state, reason)."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0]:
            found[parts[0]] = (parts[1], parts[2])
    return found


def squeue_reasons(job_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The state and pending reason of each of ``job_ids`` SLURM still knows ({} when squeue
    cannot tell: a job that ended is no longer listed, and then squeue fails)."""
    ids = sorted({str(j) for j in job_ids if str(j)})
    if not ids:
        return {}
    try:
        done = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(ids)],
                              capture_output=True, text=True, timeout=30, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_squeue(done.stdout) if done.returncode == 0 else {}


def count_reasons(rows: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """How many queued jobs wait for each reason, from a round's status rows."""
    counts: dict[str, int] = {}
    for row in rows:
        reason = row.get("reason")
        if row.get("status") == QUEUED and reason:
            counts[str(reason)] = counts.get(str(reason), 0) + 1
    return counts


def describe_reasons(counts: Mapping[str, int]) -> str:
    """``1 job PENDING (PartitionTimeLimit: its walltime is above ...)``; "" when none."""
    parts = []
    for reason, n in sorted(counts.items(), key=lambda item: -item[1]):
        hint = HINTS.get(reason)
        parts.append(f"{n} job{'s' if n != 1 else ''} PENDING ({reason}"
                     + (f": {hint})" if hint else ")"))
    return ", ".join(parts)


def worrying(counts: Mapping[str, int]) -> bool:
    """Whether a reason may hold the jobs for ever (anything but waiting one's turn)."""
    return any(reason not in ORDINARY for reason in counts)
