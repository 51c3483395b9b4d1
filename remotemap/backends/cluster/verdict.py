"""How a cluster job ended, read from the scheduler: from ``sacct`` rows to a task's failure.

Two steps, each a pure function of what the scheduler wrote, so both are unit-tested on
recorded scheduler output (``tests/test_cluster_verdict.py``):

1. On the submitting host, the engine's SLURM scheduler (``swf.SacctSlurmScheduler``) turns
   the ``sacct`` rows of a job into soma-workflow's job status and exit information
   (:func:`parse_sacct`, :func:`slurm_status`, :func:`slurm_exit_info`). soma-workflow keeps
   them, and the engine copies them into the round's status file, one *row* per job.
2. The caller judges each row that ended without the outcomes it owed (:meth:`JobEnd.of`):
   crash, timeout, cancelled or lost, whether the job ran at all, and whether its tasks that
   never ran may go to a new round.

Standard library only (no soma-workflow): the caller may submit through another host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from remotemap.errors import FailureKind

# soma-workflow's job statuses and exit statuses, as its database stores them (the values of
# ``soma_workflow.constants``: a test checks they agree).
DONE = "done"
FAILED = "failed"
RUNNING = "running"
QUEUED_ACTIVE = "queued_active"
USER_SYSTEM_SUSPENDED = "user_system_suspended"
UNDETERMINED = "undetermined"
FINISHED_REGULARLY = "finished_regularly"
FINISHED_TERM_SIG = "finished_signal"
EXIT_ABORTED = "aborted"
EXIT_NOTRUN = "aborted_before_running"
USER_KILLED = "killed_by_user"
EXIT_UNDETERMINED = "exit_status_undetermined"

#: soma-workflow's exit information: (exit status, exit value, signal, resource usage).
ExitInfo = tuple[str, int | None, int | None, str]

SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "DerivedExitCode", "Elapsed", "TotalCPU",
                "MaxRSS", "Timelimit", "NCPUS", "NodeList")
_PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING"})
_RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"})
_SUSPENDED = frozenset({"SUSPENDED", "STOPPED"})
_KILLED = frozenset({"CANCELLED", "REVOKED"})
_SYSTEM_FAILURES = frozenset(
    {"TIMEOUT", "DEADLINE", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "PREEMPTED"})
#: Step states that end with a non-zero ``code:signal`` once slurmdbd has the whole story.
_STEP_FAILURES = frozenset({"FAILED", "CANCELLED"})


# -- 1. sacct rows -> soma-workflow's status and exit information ---------------------------
@dataclass(frozen=True)
class SacctRecord:
    """A job's allocation line, plus what its numbered steps add."""

    job_id: str
    state: str
    exit_code: int
    exit_signal: int
    derived_code: int
    derived_signal: int
    elapsed: str = ""
    total_cpu: str = ""
    max_rss: str = ""
    time_limit: str = ""
    ncpus: str = ""
    nodes: str = ""
    step_signal: int = 0  # a signal that ended a numbered step (the srun), e.g. "0:9"
    steps: int = 0  # numbered steps seen (the command runs in step 0)
    #: Numbered steps still running, or shown failed or cancelled with ``0:0``: their end,
    #: code or signal has not reached slurmdbd yet (recorded: a step ``CANCELLED|0:0`` turns
    #: ``CANCELLED|0:15`` a moment later).
    steps_unsettled: int = 0

    @property
    def finished(self) -> bool:
        return not (self.state in _PENDING or self.state in _RUNNING or self.state in _SUSPENDED)

    @property
    def settled(self) -> bool:
        """Whether the exit code and signal of a job that ended by itself are all in: the srun
        step is recorded with its code, and a FAILED job shows the non-zero code it failed
        with (``FAILED|0:0`` is an end whose code has not arrived: read as such, a job that
        exited with 7 would pass for one that exited normally without its outcome)."""
        failed_without_code = self.state == "FAILED" and not any(
            (self.exit_code, self.exit_signal, self.step_signal, self.derived_code,
             self.derived_signal))
        return self.steps > 0 and not self.steps_unsettled and not failed_without_code

    @property
    def exit_pending(self) -> bool:
        """Ended by itself (COMPLETED or FAILED), but not :attr:`settled` yet."""
        return self.state in ("COMPLETED", "FAILED") and not self.settled


def _exit_text(status: str) -> str:
    """``protocol.exit_status_text``, imported when a verdict needs it: the engine imports this
    module for its sacct parsing only, and starts faster without protocol (and cloudpickle)."""
    from remotemap.protocol import exit_status_text

    return exit_status_text(status)


def _code_pair(text: str) -> tuple[int, int]:
    """``"3:0"`` -> ``(3, 0)`` (sacct's ``exit code:signal``)."""
    code, _, sig = text.partition(":")
    try:
        return int(code or 0), int(sig or 0)
    except ValueError:
        return 0, 0


def _add_step(info: dict[str, Any], step: str, state: str, exit_code: str, rss: str) -> None:
    if rss and len(rss) >= len(info["max_rss"]):
        info["max_rss"] = rss
    if step.isdigit():
        code, signal = _code_pair(exit_code)
        info["steps"] += 1
        info["step_signal"] = info["step_signal"] or signal
        state = state.split()[0]
        if state in _PENDING or state in _RUNNING or (
                state in _STEP_FAILURES and not code and not signal):
            info["steps_unsettled"] += 1


def parse_sacct(text: str) -> dict[str, SacctRecord]:
    """Parse ``sacct -n -P -o <SACCT_FIELDS>`` output into one record per job id.

    The allocation line gives state and exit code; numbered steps (``123.0``: the ``srun`` of
    the batch script) give the signal that killed the command: the allocation's
    ``DerivedExitCode`` is not reliable for that (seen ``0:0`` for a step ended by signal 9).
    """
    records: dict[str, SacctRecord] = {}
    extra: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != len(SACCT_FIELDS):
            continue
        raw_id, state, exit_code, derived, elapsed, cpu, rss, limit, ncpus, nodes = fields
        job_id, dot, step = raw_id.partition(".")
        if dot:
            info = extra.setdefault(job_id, {"max_rss": "", "step_signal": 0, "steps": 0,
                                             "steps_unsettled": 0})
            _add_step(info, step, state or "-", exit_code, rss)
            continue
        code, sig = _code_pair(exit_code)
        dcode, dsig = _code_pair(derived)
        records[job_id] = SacctRecord(
            job_id=job_id, state=state.split()[0] if state else "",  # "CANCELLED by 0"
            exit_code=code, exit_signal=sig, derived_code=dcode, derived_signal=dsig,
            elapsed=elapsed, total_cpu=cpu, time_limit=limit, ncpus=ncpus, nodes=nodes)
    for job_id, info in extra.items():
        if job_id in records:
            records[job_id] = replace(records[job_id], **info)
    return records


def slurm_status(rec: SacctRecord | None, *, may_wait: bool) -> str:
    """soma-workflow's status of a job from its record (None: sacct does not know it yet).

    A job whose exit is still pending (:attr:`SacctRecord.exit_pending`) reads as running
    while ``may_wait`` (the caller's grace period since it first saw it so): judged now, its
    exit code or signal could be missing."""
    if rec is None or rec.state in _PENDING:
        return QUEUED_ACTIVE
    if rec.state in _RUNNING:
        return RUNNING
    if rec.state in _SUSPENDED:
        return USER_SYSTEM_SUSPENDED
    if rec.state in ("COMPLETED", "FAILED"):
        if rec.exit_pending and may_wait:
            return RUNNING
        # Like the local scheduler: the command ran; its exit code tells the rest.
        return DONE
    # Cancelled, timed out, node failure, out of memory, unknown: did not end by itself.
    return FAILED


def slurm_exit_info(rec: SacctRecord | None) -> ExitInfo:
    """soma-workflow's exit information of a job that ended, from its record."""
    if rec is None:
        return (EXIT_UNDETERMINED, None, None, "")
    usage = (f"cput={rec.total_cpu} mem={rec.max_rss} walltime={rec.elapsed} "
             f"timelimit={rec.time_limit} ncpus={rec.ncpus} node={rec.nodes or '-'} "
             f"slurm_state={rec.state} slurm_job_id={rec.job_id}")
    if rec.state in _KILLED:
        return (USER_KILLED, None, None, usage)
    signum = rec.exit_signal or rec.step_signal or rec.derived_signal
    if rec.state in _SYSTEM_FAILURES:
        return (EXIT_ABORTED, None, signum or None, usage)
    # COMPLETED or FAILED. The batch script ends with `srun cmd`: ExitCode is srun's
    # status; a command killed by a signal shows in the srun step's ExitCode ("0:9").
    if signum:
        return (FINISHED_TERM_SIG, -signum, signum, usage)
    return (FINISHED_REGULARLY, rec.exit_code, None, usage)


# -- 2. a job's row -> the verdict on its tasks ---------------------------------------------
def usage_field(row: Mapping[str, Any], key: str) -> str:
    """One ``key=value`` of a row's resource usage (``slurm_state``, ``node``), or ""."""
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
        """The verdict on one job's row of the round's status file."""
        status, exit_status = row.get("status"), row.get("exit_status")
        again = not cancelled
        if status not in (DONE, FAILED):
            return JobEnd("cancelled" if cancelled else "lost",
                          f"was never started (job status {status or 'unknown'})", False,
                          resubmit=again)
        if exit_status == EXIT_NOTRUN:
            return JobEnd("cancelled" if cancelled else "lost",
                          f"was not started: {_not_run_why(spec, cancelled)}", False,
                          resubmit=again)
        if exit_status == USER_KILLED:
            return JobEnd("cancelled", "was cancelled (scancel, qdel or remotemap cancel)",
                          row.get("drms") is not None, resubmit=False)
        if exit_status == EXIT_ABORTED:
            return _aborted(row, scheduler, again)
        if exit_status == FINISHED_TERM_SIG and row.get("signal"):
            return JobEnd("crash", _exit_text(f"signal:{int(row['signal'])}"), True,
                          resubmit=again)
        value = row.get("exit_value")
        if exit_status == FINISHED_REGULARLY and isinstance(value, int):
            return _exited(value, spec, again)
        return JobEnd("lost", f"ended with exit status {exit_status}", True, resubmit=again)



def _not_run_why(spec: Mapping[str, Any], cancelled: bool) -> str:
    """Why soma-workflow never started a job (``aborted_before_running``): the round was
    stopped, or the job waited for another that failed."""
    if cancelled:
        return "the run was cancelled before the job's turn (remotemap cancel)"
    if spec.get("dependencies"):
        return "a job it waited for failed"
    if spec.get("canary"):
        return "the round's first job failed"
    return "soma-workflow aborted it before it ran"


def _aborted(row: Mapping[str, Any], scheduler: str, again: bool) -> JobEnd:
    """A job the scheduler ended (or never took)."""
    if row.get("drms") is None:
        return JobEnd("lost", f"could not be submitted to {scheduler}", False, resubmit=False)
    slurm_state = usage_field(row, "slurm_state")
    if slurm_state == "TIMEOUT":
        return JobEnd("timeout", "exceeded the job's walltime (cluster.walltime; "
                      "SLURM state TIMEOUT)", True, resubmit=again)
    return JobEnd("crash", f"was ended by the scheduler (state {slurm_state or 'unknown'})",
                  True, resubmit=again)


def _exited(value: int, spec: Mapping[str, Any], again: bool) -> JobEnd:
    """A job whose command ended by itself with exit value ``value``."""
    if value == 0:
        return JobEnd("lost", "exited without writing its outcome", True, ok=True,
                      resubmit=False)
    if value < 0:
        return JobEnd("crash", _exit_text(f"signal:{-value}"), True, resubmit=again)
    if value == 124 and (spec.get("task_timeout") or spec.get("wrapper_walltime")):
        what = ("its timeout" if spec.get("task_timeout")
                else "the job's walltime (cluster.walltime)")
        return JobEnd("timeout", f"was killed after exceeding {what}", True, resubmit=again)
    return JobEnd("crash", _exit_text(f"exit:{value}"), True, resubmit=again)


def describe(row: Mapping[str, Any], scheduler: str, name: str) -> str:
    """The scheduler's view of a job, for failure messages."""
    parts = [f"{scheduler} job {row.get('drms') if row.get('drms') is not None else '-'} "
             f"{name}", f"status {row.get('status')}", f"exit status {row.get('exit_status')}"]
    if row.get("exit_value") is not None:
        parts.append(f"exit value {row.get('exit_value')}")
    if row.get("signal"):
        parts.append(f"signal {row.get('signal')}")
    for key in ("slurm_state", "node"):
        if usage_field(row, key) and usage_field(row, key) != "-":
            parts.append(f"{key.replace('_', ' ')} {usage_field(row, key)}")
    return ", ".join(parts)


def job_host(row: Mapping[str, Any], default: str) -> str:
    """The node a job ran on, when the scheduler says, else ``default``."""
    node = usage_field(row, "node")
    return node if node not in ("", "-") else default


def stderr_tail(data: bytes | None, lines: int = 20) -> str:
    """The end of a job's stderr, without srun's and slurmstepd's own lines."""
    text = (data or b"").decode(errors="replace").splitlines()
    kept = [line for line in text if not line.startswith(("srun:", "slurmstepd"))]
    return "\n".join(kept[-lines:])
