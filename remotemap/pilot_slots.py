"""The worker job (``python -m remotemap.worker pilot``: :func:`run_pilot`), and a job of
several slots (``cluster.worker_slots``): one claim loop per slot, each a process forked by the
job at its start.

Processes, not threads: CPU-bound tasks of one job then run side by side instead of taking
turns on one interpreter lock. They are forked before anything starts a thread (the task
function is loaded in each loop, after the fork, so a module it imports that starts threads
- a BLAS pool, say - starts them in that loop only), and each dies with the job's process
(``PR_SET_PDEATHSIG``), so a job killed or cancelled leaves none of its loops behind.

Each loop claims under its own name, ``claimed/R-FILE.A.J.S`` (``remotemap.pilot``): the
engine still gives back every claim of job ``J`` once the job ended, and the job's own
process gives back the claims of loop ``S`` when that loop's process dies while the job
lives (its chunk goes back to the queue, or stays claimed to fail once it was claimed
:data:`~remotemap.pilot.MAX_CLAIMS` times), then starts another loop in that slot.

Standard library only (the worker's fence, ``tests/test_layers_worker.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING

from remotemap.pilot import (
    MAX_CLAIMS,
    PilotOptions,
    PilotQueue,
    claim_loop,
    job_end_time,
    spec_name,
)

if TYPE_CHECKING:
    from remotemap.worker_run import WorkerRun

#: ``prctl`` option: the signal this process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def spec_slots(run: WorkerRun, rnd: int) -> int:
    """The claim loops per worker job the round's spec asks for (1 when it names none)."""
    data = run.rundir.read(spec_name(rnd))
    if data is None:
        raise FileNotFoundError(f"{os.path.join(run.rundir.root, spec_name(rnd))}: the spec "
                                f"of round {rnd} is missing")
    return max(1, int(json.loads(data).get("slots") or 1))


def run_pilot(run: WorkerRun, options: PilotOptions) -> int:
    """Run the worker job: one claim loop in this process (``pilot.claim_loop``), or, for a job
    of several slots, one per slot, each in a process of its own (:func:`run_slots`); the
    exit status: 0 when every loop ended normally."""
    options = dataclasses.replace(options, slots=options.slots or spec_slots(run, options.rnd))
    end = job_end_time(options.walltime, time.time())  # once for the job's loops
    if options.slots == 1:
        claim_loop(run, options.job, None, end, options)
        return 0
    return run_slots(run, options, end)


def run_slots(run: WorkerRun, options: PilotOptions, end: float | None) -> int:
    """Run ``options.slots`` claim loops at once and wait for them all; a loop that died
    while it held claims has them given back and is replaced. 0 when every loop ended
    normally, else 1 (a loop died holding nothing: it would die again)."""
    import remotemap.worker_run  # noqa: F401  (loaded once here, shared by the forked loops)

    queue = PilotQueue(run.rundir.root, options.rnd, run.rundir.fd)
    loops = {_start_loop(run, options, slot, end): slot for slot in range(options.slots)}
    failed = False
    while loops:
        pid, status = os.wait()
        slot = loops.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if slot is None or code == 0:
            continue
        back, kept = queue.requeue({options.job}, functools.partial(has_outcome, run), slot)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        print(f"remotemap pilot: job {options.job} slot {slot} (pid {pid}) ended with {how}; "
              f"chunk files back in the queue: {back or 'none'}; claimed {MAX_CLAIMS} "
              f"times, left to fail: {kept or 'none'}", file=sys.stderr, flush=True)
        if back or kept:
            loops[_start_loop(run, options, slot, end)] = slot
        else:
            failed = True
    return 1 if failed else 0


def has_outcome(run: WorkerRun, file: int) -> bool:
    """Whether chunk ``file`` has its outcome in the run directory."""
    from remotemap.protocol import outcome_name

    try:
        os.stat(outcome_name(file), dir_fd=run.rundir.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _start_loop(run: WorkerRun, options: PilotOptions, slot: int, end: float | None) -> int:
    """Fork the claim loop of ``slot``; its pid. The child never returns: it exits 0 once the
    loop ended, 1 on an error (its traceback in the job's stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _die_with(parent)
        claim_loop(run, options.job, slot, end, options)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with(parent: int) -> None:
    """Have this process killed when its parent (the job's process) dies: a loop must not
    claim for a job the engine already counts as ended."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
