"""How many batch submissions a benchmark row made, read from SLURM's accounting (``sacct``).

A row's submissions are the job records whose raw id is above the highest id seen before the
row started (ids only grow on one controller, so no clock or time window is involved), read
once accounting holds every job the controller knows of (slurmdbd hears of jobs late). A job
array is one ``sbatch`` call: its tasks are listed apart (``123_0``, ``123_1``...) but share
the array's id before the ``_``, so they count as one submission of N array tasks.

Every call needs ``SLURM_CONF`` in ``env`` (without it the clients look the controller up
through DNS, which leaves the machine).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: States after which a job record no longer changes.
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                      "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
#: Fields asked of sacct, in this order.
FIELDS = ("JobID", "JobIDRaw", "State")


@dataclass(frozen=True)
class JobLine:
    """One allocation line of ``sacct -X -P -o JobID,JobIDRaw,State``."""

    job_id: str  # "123", or "123_4" for an array task, "123_[5-9]" for its pending rest
    raw_id: int
    state: str  # first word: "CANCELLED by 0" is CANCELLED

    @property
    def submission(self) -> str:
        """The id of the ``sbatch`` call that made this job (an array's own id)."""
        return self.job_id.partition("_")[0]

    @property
    def is_array_task(self) -> bool:
        return "_" in self.job_id


@dataclass(frozen=True)
class Submissions:
    """What a row submitted: ``sbatch`` calls, of which ``arrays`` were job arrays holding
    ``array_tasks`` tasks in all, and ``jobs`` job records in all."""

    sbatch_calls: int
    arrays: int
    array_tasks: int
    jobs: int

    def describe(self) -> str:
        if not self.arrays:
            return f"{self.sbatch_calls} sbatch ({self.jobs} jobs)"
        return (f"{self.sbatch_calls} sbatch ({self.arrays} job array(s) of "
                f"{self.array_tasks} array tasks; {self.jobs} job records)")


def parse_lines(text: str) -> list[JobLine]:
    """The job lines of ``sacct -n -X -P -o JobID,JobIDRaw,State`` output."""
    found = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != len(FIELDS) or not fields[1].isdigit():
            continue
        state = fields[2].split()[0] if fields[2].strip() else ""
        found.append(JobLine(fields[0], int(fields[1]), state))
    return found


def count(lines: Sequence[JobLine], after_id: int) -> Submissions:
    """The submissions among ``lines`` whose raw id is above ``after_id``."""
    mine = [line for line in lines if line.raw_id > after_id]
    arrays = {line.submission for line in mine if line.is_array_task}
    # A pending array's remainder ("123_[5-9]") is one line for several tasks: count only
    # the tasks that have their own line (every task has one once the array is finished).
    tasks = [line for line in mine if line.is_array_task and "[" not in line.job_id]
    return Submissions(sbatch_calls=len({line.submission for line in mine}),
                       arrays=len(arrays), array_tasks=len(tasks), jobs=len(mine))


def read_lines(env: Mapping[str, str]) -> list[JobLine]:
    """Every job of every user the controller's accounting holds (allocation lines only)."""
    done = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-a", "-S", "2000-01-01", "-o", ",".join(FIELDS)],
        env=dict(env), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sacct failed (exit {done.returncode}, SLURM_CONF="
                           f"{env.get('SLURM_CONF', 'unset')}): {done.stderr.strip()[-300:]}")
    return parse_lines(done.stdout)


def controller_ids(env: Mapping[str, str]) -> set[int]:
    """The raw ids of the jobs the controller holds now, ended ones included (it keeps them
    ``MinJobAge`` seconds): accounting hears of a job some seconds after the controller."""
    done = subprocess.run(["squeue", "-h", "-a", "-t", "all", "-o", "%A"], env=dict(env),
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"squeue failed (exit {done.returncode}, SLURM_CONF="
                           f"{env.get('SLURM_CONF', 'unset')}): {done.stderr.strip()[-300:]}")
    return {int(word) for word in done.stdout.split() if word.isdigit()}


def high_water(env: Mapping[str, str]) -> int:
    """The highest raw job id the controller or accounting knows so far (0 on a fresh
    cluster)."""
    known = {line.raw_id for line in read_lines(env)} | controller_ids(env)
    return max(known, default=0)


def settled_count(env: Mapping[str, str], after_id: int, timeout: float = 30.0) -> Submissions:
    """:func:`count` once accounting holds every job of the row the controller knows, each in
    a terminal state.

    A row whose peer left a job behind (still running or pending), or an accounting that
    lags more than ``timeout`` seconds, is counted as it is at ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in read_lines(env) if line.raw_id > after_id]
        expected = {i for i in controller_ids(env) if i > after_id}
        settled = expected <= {line.raw_id for line in lines} and all(
            line.state in TERMINAL for line in lines)
        if settled or time.monotonic() > deadline:
            return count(lines, after_id)
        time.sleep(0.5)
