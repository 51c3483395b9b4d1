"""How a cluster job's end is judged (``remotemap.backends.cluster.verdict``), replayed from
recorded scheduler output: no scheduler runs here.

The ``sacct`` outputs below were recorded on 2026-11-29 from the real single-node SLURM of
tests/infra/slurm.py (slurm-wlm 22.05.8, SLURM_CONF set to its slurm.conf): one batch script
per case, ``#!/bin/bash`` then ``srun python -c ...`` as ``swf.slurm_script`` writes them, and
``sacct -n -P -j ID -o <SACCT_FIELDS>`` run every 0.1 s until the job ended; each string is one
answer as sacct gave it (job ids as they came). The soma-workflow rows (``LOCAL_ROWS``) were
recorded the same day from ``rounds/0.status.json`` of runs on soma-workflow's local
scheduler (``keep_files=True``). Rows or outputs made by hand are marked so, with why.
"""

from __future__ import annotations

import posixpath
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from remotemap import protocol
from remotemap.backends.cluster import layout
from remotemap.backends.cluster.verdict import (
    DONE,
    FAILED,
    QUEUED_ACTIVE,
    RUNNING,
    SACCT_FIELDS,
    JobEnd,
    SacctRecord,
    parse_sacct,
    slurm_exit_info,
    slurm_status,
)

COMPLETED = """\
1|COMPLETED|0:0|0:0|00:00:00|00:00.096||00:10:00|1|localhost
1.batch|COMPLETED|0:0||00:00:00|00:00.022|||1|localhost
1.0|COMPLETED|0:0||00:00:00|00:00.074|||1|localhost
"""
# os._exit(7)
EXIT_7 = """\
2|FAILED|7:0|7:0|00:00:00|00:00.077||00:10:00|1|localhost
2.batch|FAILED|7:0||00:00:00|00:00.023|||1|localhost
2.0|FAILED|7:0||00:00:00|00:00.054|||1|localhost
"""
# os.kill(os.getpid(), SIGSEGV): the step holds the signal, the allocation srun's 11.
SEGV = """\
3|FAILED|11:0|0:11|00:00:00|00:00.090||00:10:00|1|localhost
3.batch|FAILED|11:0||00:00:00|00:00.022|||1|localhost
3.0|CANCELLED|0:11||00:00:00|00:00.067|||1|localhost
"""
# os.kill(os.getpid(), SIGKILL)
KILLED_9 = """\
4|FAILED|9:0|0:9|00:00:00|00:00.086||00:10:00|1|localhost
4.batch|FAILED|9:0||00:00:00|00:00.022|||1|localhost
4.0|CANCELLED|0:9||00:00:00|00:00.063|||1|localhost
"""
# scancel of a running `srun sleep 300`: first answer after the cancel, then the next one.
CANCELLED_FIRST = """\
5|CANCELLED by 0|0:0|0:0|00:00:01|00:00:00||00:10:00|1|localhost
5.batch|CANCELLED|0:0||00:00:01|00:00:00|||1|localhost
5.0|CANCELLED|0:0||00:00:01|00:00:00|||1|localhost
"""
CANCELLED = """\
5|CANCELLED by 0|0:0|0:0|00:00:01|00:00.008||00:10:00|1|localhost
5.batch|CANCELLED|0:15||00:00:01|00:00.005|||1|localhost
5.0|CANCELLED|0:15||00:00:01|00:00.003|||1|localhost
"""
# `#SBATCH --time=1` and `srun sleep 300`
TIMEOUT = """\
6|TIMEOUT|0:0|0:0|00:01:27|00:00.004||00:01:00|1|localhost
6.batch|CANCELLED|0:15||00:01:27|00:00.004|12100K||1|localhost
6.0|TIMEOUT|0:0||00:01:27|00:00:00|||1|localhost
"""
# `#SBATCH --hold`: never started.
HELD = "8|PENDING|0:0|0:0|00:00:00|00:00:00||00:10:00|1|None assigned\n"
# Running: recorded before the allocation line caught up with its steps.
STARTING = """\
2|PENDING|0:0|0:0|00:00:00|00:00:00|||0|localhost
2.batch|RUNNING|0:0||00:00:00|00:00:00|||1|localhost
2.0|RUNNING|0:0||00:00:00|00:00:00|||1|localhost
"""
# Made by hand from the TIMEOUT answer (this node has no memory limit to exceed and no second
# node to lose): the states the code groups with TIMEOUT as ended by the system.
OUT_OF_MEMORY = TIMEOUT.replace("6|TIMEOUT", "6|OUT_OF_MEMORY").replace(
    "6.0|TIMEOUT", "6.0|OUT_OF_MEMORY")
NODE_FAIL = TIMEOUT.replace("6|TIMEOUT", "6|NODE_FAIL").replace("6.0|TIMEOUT", "6.0|CANCELLED")
# Made by hand from EXIT_7: the job's end seen before its exit code (the allocation FAILED
# with 0:0), with and without its srun step. Judged as the first reads, os._exit(7) passes for
# a job that exited normally without writing its outcome: "lost" instead of "crash".
EXIT_7_BEFORE_ITS_CODE = EXIT_7.replace("2|FAILED|7:0|7:0", "2|FAILED|0:0|0:0")
EXIT_7_BEFORE_ITS_CODE_AND_STEP = EXIT_7_BEFORE_ITS_CODE.splitlines()[0] + "\n"
# Made by hand from SEGV: the srun step still shown running when the allocation has ended.
SEGV_STEP_STILL_RUNNING = SEGV.replace("3.0|CANCELLED|0:11", "3.0|RUNNING|0:0").replace(
    "3|FAILED|11:0|0:11", "3|FAILED|11:0|0:0")

#: soma-workflow's local scheduler: tasks os._exit(7), SIGKILL themselves, overran timeout=2.
LOCAL_ROWS = {
    "ok": {"status": "done", "exit_status": "finished_regularly", "exit_value": 0,
           "signal": None, "usage": "", "drms": 1},
    "exit7": {"status": "done", "exit_status": "finished_regularly", "exit_value": 7,
              "signal": None, "usage": "", "drms": 2},
    "sigkill": {"status": "done", "exit_status": "finished_regularly", "exit_value": -9,
                "signal": None, "usage": "", "drms": 3},
    "timeout": {"status": "done", "exit_status": "finished_regularly", "exit_value": 124,
                "signal": None, "usage": "", "drms": 4},
}


def record(text: str) -> SacctRecord:
    (rec,) = parse_sacct(text).values()
    return rec


def row_of(text: str) -> dict[str, Any]:
    """The status-file row the engine writes for a job sacct answered ``text`` for (once the
    job is over: what soma-workflow stores from the scheduler's two answers)."""
    rec = record(text)
    exit_status, value, signal, usage = slurm_exit_info(rec)
    return {"status": slurm_status(rec, may_wait=False), "exit_status": exit_status,
            "exit_value": value, "signal": signal, "usage": usage, "drms": int(rec.job_id)}


def judge(row: dict[str, Any], *, cancelled: bool = False, scheduler: str = "slurm",
          **spec: Any) -> JobEnd:
    return JobEnd.of(row, scheduler, spec, cancelled)


# -- sacct answers -> a verdict -------------------------------------------------------------------
def test_completed_without_outcome_is_lost_and_not_resubmitted() -> None:
    end = judge(row_of(COMPLETED))
    assert (end.kind, end.ok, end.started, end.resubmit) == ("lost", True, True, False)
    assert end.why == "exited without writing its outcome"


def test_failed_with_exit_code_is_a_crash_naming_the_code() -> None:
    row = row_of(EXIT_7)
    assert (row["status"], row["exit_status"], row["exit_value"]) == (
        DONE, "finished_regularly", 7)
    end = judge(row)
    assert (end.kind, end.started, end.resubmit) == ("crash", True, True)
    assert "exited with code 7" in end.why
    assert "slurm_state=FAILED" in row["usage"] and "node=localhost" in row["usage"]


@pytest.mark.parametrize(("text", "name", "number"), [(SEGV, "SIGSEGV", 11),
                                                      (KILLED_9, "SIGKILL", 9)])
def test_killed_by_a_signal_takes_it_from_the_srun_step(text: str, name: str,
                                                        number: int) -> None:
    row = row_of(text)
    assert (row["exit_status"], row["exit_value"], row["signal"]) == (
        "finished_signal", -number, number)
    end = judge(row)
    assert end.kind == "crash" and name in end.why and f"signal {number}" in end.why


@pytest.mark.parametrize("text", [CANCELLED_FIRST, CANCELLED])
def test_scancel_is_cancelled_and_never_resubmitted(text: str) -> None:
    row = row_of(text)
    assert (row["status"], row["exit_status"]) == (FAILED, "killed_by_user")
    end = judge(row)
    assert (end.kind, end.started, end.resubmit) == ("cancelled", True, False)


def test_walltime_is_a_timeout() -> None:
    row = row_of(TIMEOUT)
    assert (row["status"], row["exit_status"]) == (FAILED, "aborted")
    end = judge(row)
    assert (end.kind, end.started) == ("timeout", True) and "SLURM state TIMEOUT" in end.why


@pytest.mark.parametrize(("text", "state"), [(OUT_OF_MEMORY, "OUT_OF_MEMORY"),
                                             (NODE_FAIL, "NODE_FAIL")])
def test_out_of_memory_and_node_failure_are_crashes_naming_the_state(text: str,
                                                                     state: str) -> None:
    end = judge(row_of(text))
    assert (end.kind, end.started, end.resubmit) == ("crash", True, True)
    assert end.why == f"was ended by the scheduler (state {state})"


def test_a_job_never_started_is_lost_or_cancelled_and_its_tasks_may_go_again() -> None:
    assert slurm_status(record(HELD), may_wait=False) == QUEUED_ACTIVE
    row = {"status": QUEUED_ACTIVE, "exit_status": None, "exit_value": None, "signal": None,
           "usage": "", "drms": 8}
    end = judge(row)
    assert (end.kind, end.started, end.resubmit) == ("lost", False, True)
    assert end.why == "was never started (job status queued_active)"
    assert judge(row, cancelled=True).kind == "cancelled"
    assert judge(row, cancelled=True).resubmit is False


def test_a_job_soma_workflow_never_started_says_why_it_did_not() -> None:
    """``aborted_before_running``: after a cancel, the cancel stopped it, whatever the round;
    otherwise the job it waited for (a workflow's prerequisite, a round's first job) failed."""
    row = {"status": "failed", "exit_status": "aborted_before_running", "exit_value": None,
           "signal": None, "usage": "", "drms": None}
    cancelled = judge(row, cancelled=True, canary=True)
    assert (cancelled.kind, cancelled.started, cancelled.resubmit) == ("cancelled", False, False)
    assert cancelled.why == ("was not started: the run was cancelled before the job's turn "
                             "(remotemap cancel)")
    assert judge(row, canary=True).why == "was not started: the round's first job failed"
    assert judge(row, canary=True).resubmit is True
    assert judge(row, dependencies=[[0, 1]]).why == \
        "was not started: a job it waited for failed"
    assert judge(row).why == "was not started: soma-workflow aborted it before it ran"


def test_running_jobs_read_as_running() -> None:
    assert slurm_status(record(STARTING), may_wait=False) == QUEUED_ACTIVE
    running = STARTING.replace("2|PENDING", "2|RUNNING")
    assert slurm_status(record(running), may_wait=False) == RUNNING
    assert not record(running).finished


# -- the end seen before the exit code -------------------------------------------------------
@pytest.mark.parametrize("text", [EXIT_7_BEFORE_ITS_CODE, EXIT_7_BEFORE_ITS_CODE_AND_STEP,
                                  SEGV_STEP_STILL_RUNNING])
def test_an_end_without_its_exit_code_reads_as_running_while_it_may_wait(text: str) -> None:
    rec = record(text)
    assert rec.finished and rec.exit_pending and not rec.settled
    assert slurm_status(rec, may_wait=True) == RUNNING
    assert slurm_status(rec, may_wait=False) == DONE  # the grace is over: judged as it is


@pytest.mark.parametrize("text", [COMPLETED, EXIT_7, SEGV, KILLED_9])
def test_complete_records_are_settled(text: str) -> None:
    rec = record(text)
    assert rec.settled and not rec.exit_pending
    assert slurm_status(rec, may_wait=True) == DONE


def test_a_cancelled_step_without_its_signal_yet_is_unsettled() -> None:
    """Recorded: right after scancel the srun step (``5.0``; ``5.batch`` is not numbered)
    reads CANCELLED 0:0, a moment later 0:15."""
    assert record(CANCELLED_FIRST).steps_unsettled == 1
    assert record(CANCELLED).steps_unsettled == 0


def test_no_exit_code_yet_is_lost_blaming_the_running_task() -> None:
    """soma-workflow's exit status when the scheduler could not say (no sacct record)."""
    row = {"status": DONE, "exit_status": slurm_exit_info(None)[0], "exit_value": None,
           "signal": None, "usage": "", "drms": 2}
    end = judge(row)
    assert (end.kind, end.started) == ("lost", True)
    assert end.why == "ended with exit status exit_status_undetermined"


# -- soma-workflow's local scheduler rows ----------------------------------------------------------
def test_local_scheduler_rows() -> None:
    assert judge(LOCAL_ROWS["ok"], scheduler="local").ok
    assert "exited with code 7" in judge(LOCAL_ROWS["exit7"], scheduler="local").why
    assert "SIGKILL" in judge(LOCAL_ROWS["sigkill"], scheduler="local").why
    timed_out = judge(LOCAL_ROWS["timeout"], scheduler="local", task_timeout=2.0)
    assert (timed_out.kind, timed_out.why) == ("timeout",
                                               "was killed after exceeding its timeout")
    walltime = judge(LOCAL_ROWS["timeout"], scheduler="local", wrapper_walltime=60)
    assert "the job's walltime (cluster.walltime)" in walltime.why
    # 124 without a timeout is the task's own exit code.
    assert judge(LOCAL_ROWS["timeout"], scheduler="local").kind == "crash"


def test_rows_of_jobs_soma_workflow_did_not_run() -> None:
    """Made by hand: soma-workflow's exit statuses for a job held back by a failed canary, and
    for one whose submission failed (no scheduler id)."""
    held = judge({"status": FAILED, "exit_status": "aborted_before_running", "drms": None})
    assert (held.kind, held.started, held.resubmit) == ("lost", False, True)
    refused = judge({"status": FAILED, "exit_status": "aborted", "drms": None})
    assert (refused.kind, refused.started, refused.resubmit) == ("lost", False, False)
    assert refused.why == "could not be submitted to slurm"


def test_status_names_are_soma_workflows() -> None:
    constants = pytest.importorskip("soma_workflow.constants")
    from remotemap.backends.cluster import verdict

    for name in ("DONE", "FAILED", "RUNNING", "QUEUED_ACTIVE", "USER_SYSTEM_SUSPENDED",
                 "UNDETERMINED", "FINISHED_REGULARLY", "FINISHED_TERM_SIG", "EXIT_ABORTED",
                 "EXIT_NOTRUN", "USER_KILLED", "EXIT_UNDETERMINED"):
        assert getattr(verdict, name) == getattr(constants, name), name


def test_layout_names_agree_with_protocol() -> None:
    """layout spells protocol's directory names itself (it must stay importable without
    cloudpickle); they must be the same names."""
    assert layout.LOGS == protocol.LOGS
    assert posixpath.join(layout.OUTCOMES, layout.outcome_file(7)) == protocol.outcome_name(7)
    assert layout.SUBDIRS[: len(protocol.SUBDIRS)] == protocol.SUBDIRS


# -- the engine's scheduler, replaying sacct through a mocked subprocess ----------------------
@pytest.fixture
def scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``SacctSlurmScheduler`` whose ``sacct`` calls answer from ``scheduler.answers``."""
    swf = pytest.importorskip("remotemap.backends.cluster.swf")
    # SlurmScheduler.__init__ asks for this host's fully qualified name: no DNS here.
    monkeypatch.setattr(swf.slurm_scheduler.socket, "getfqdn", lambda: "localhost")
    made = swf.SacctSlurmScheduler(None, "/nonexistent")
    made.poll_interval = 0.0  # every status question polls
    made.answers = []
    made.commands = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        made.commands.append(command)
        return subprocess.CompletedProcess(command, 0, made.answers.pop(0), "")

    monkeypatch.setattr(swf.subprocess, "run", fake_run)
    yield made


def engine_loop(scheduler: Any, job_id: str) -> tuple[str, tuple[Any, ...]]:
    """What soma-workflow's engine does per tick: ask the status; once it says the job ended,
    ask the exit information, once."""
    while scheduler.answers:
        status = scheduler.get_job_status(job_id)
        if status in (DONE, FAILED):
            return status, scheduler.get_job_exit_info(job_id)
    raise AssertionError("the job never ended")


def test_scheduler_waits_for_the_exit_code_of_an_ended_job(scheduler: Any) -> None:
    scheduler.step_grace = 60.0
    scheduler.answers = [STARTING, EXIT_7_BEFORE_ITS_CODE_AND_STEP, EXIT_7_BEFORE_ITS_CODE,
                         EXIT_7]
    status, info = engine_loop(scheduler, "2")
    assert status == DONE and info[:3] == ("finished_regularly", 7, None)
    assert len(scheduler.commands) == 4
    assert scheduler.commands[0][-4:] == ["-j", "2", "-o", ",".join(SACCT_FIELDS)]
    end = judge({"status": status, "exit_status": info[0], "exit_value": info[1],
                 "signal": info[2], "usage": info[3], "drms": 2})
    assert end.kind == "crash"


def test_scheduler_judges_what_it_has_once_the_grace_is_over(scheduler: Any) -> None:
    scheduler.step_grace = 0.0
    scheduler.answers = [EXIT_7_BEFORE_ITS_CODE, EXIT_7]
    status, info = engine_loop(scheduler, "2")
    assert status == DONE and info[:2] == ("finished_regularly", 0)
    assert scheduler.answers == [EXIT_7]  # did not wait


@pytest.mark.parametrize(("answers", "job_id", "expected"), [
    ([SEGV_STEP_STILL_RUNNING, SEGV], "3", (DONE, "finished_signal", -11, 11)),
    ([CANCELLED], "5", (FAILED, "killed_by_user", None, None)),
    ([TIMEOUT], "6", (FAILED, "aborted", None, None)),
])
def test_scheduler_reads_signal_cancel_and_timeout(scheduler: Any, answers: list[str],
                                                   job_id: str,
                                                   expected: tuple[Any, ...]) -> None:
    scheduler.step_grace = 60.0
    scheduler.answers = list(answers)
    status, info = engine_loop(scheduler, job_id)
    assert (status, *info[:3]) == expected
    assert scheduler.answers == []


def test_scheduler_polls_soon_after_hurry_then_less_and_less_often(scheduler: Any) -> None:
    """Once every task wrote its outcome the engine hurries the scheduler: sacct is asked
    again after ``HURRY_FIRST`` seconds rather than a whole ``poll_interval``, and again
    after a gap each time (never at every tick)."""
    from remotemap.backends.cluster.swf import HURRY_FIRST, HURRY_GROWTH

    scheduler.poll_interval = 60.0
    scheduler.answers = [STARTING] * 4
    scheduler.get_job_status("2")
    scheduler.get_job_status("2")
    assert len(scheduler.commands) == 1  # within poll_interval: the cached record
    scheduler.hurry()
    time.sleep(HURRY_FIRST * 1.5)
    scheduler.get_job_status("2")
    assert len(scheduler.commands) == 2
    scheduler.get_job_status("2")  # right after a poll: still a gap between two
    assert len(scheduler.commands) == 2
    time.sleep(HURRY_FIRST * HURRY_GROWTH * 1.5)
    scheduler.get_job_status("2")
    assert len(scheduler.commands) == 3
    assert scheduler.answers == [STARTING]  # and never more often than asked for
