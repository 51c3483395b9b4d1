"""Worker jobs that pull tasks (``cluster.dispatch = "workers"``): the shared queue, how many
tasks a worker claims at once, and the worker job's loop.

A round run by worker jobs leaves one empty *marker* per chunk file in the run directory::

    queue/R-FILE.A            chunk file FILE of round R, waiting (A: times claimed before)
    claimed/R-FILE.A.J        the same, claimed by worker job J of round R
    claimed/R-FILE.A.J.S      ... by claim loop S of worker job J (a job of several slots)

A worker job (``python -m remotemap.worker pilot ...``) claims a marker by renaming it from
``queue/`` to ``claimed/`` with its job number in the name: ``rename`` is atomic on one
filesystem, so two workers never run the same chunk. It runs the chunk as the ``run`` command
does (``worker_run.execute_chunk``: the same sealed outcome file), and claims again until the
queue is empty, or until the next claim would not end before its job's end time. The engine on
the submitting host gives the claims of a worker job that ended back to the queue
(:meth:`PilotQueue.requeue`) when they have no outcome. A worker job of several slots runs one
claim loop per slot, each in a process of its own (``remotemap.pilot_slots``, which runs the
``pilot`` command).

Standard library only at import: the engine and the caller read these names too; the loop
imports the worker's modules when it runs.
"""

from __future__ import annotations

import functools
import math
import os
import posixpath
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

QUEUE = "queue"
CLAIMED = "claimed"
#: A chunk whose worker died while it ran goes back to the queue until it was claimed this
#: many times; then it stays claimed, and the caller fails its task with the job's story.
MAX_CLAIMS = 2
#: Seconds one claim aims to take once task times are known (fewer claims on a shared
#: filesystem; never so many that free workers starve: see :class:`Sizer`).
CLAIM_TARGET = 2.0
#: Seconds a worker waits before it looks again at a queue held back (:func:`held_name`).
HELD_WAIT = 0.2
#: A claim must end this much before the job's end time, on top of :data:`TIME_SAFETY`.
END_MARGIN = 10.0
#: The measured mean task time is multiplied by this before a claim is judged to fit.
TIME_SAFETY = 1.5


def queue_marker(rnd: int, file: int, attempt: int = 0) -> str:
    """The name (relative to the run directory) of chunk ``file`` waiting in round ``rnd``."""
    return posixpath.join(QUEUE, f"{rnd}-{file:06d}.{attempt}")


def held_name(rnd: int) -> str:
    """Present while round ``rnd`` holds back all but its first chunk (its canary): workers
    wait instead of exiting on an empty queue (see ``backends/cluster/pilots.py``)."""
    return posixpath.join(QUEUE, f"{rnd}.held")


def spec_name(rnd: int) -> str:
    """The round's spec, written by the caller (``backends/cluster/layout.spec_name``): a
    worker job reads its number of slots there."""
    return posixpath.join("rounds", f"{rnd}.json")


def marker_source(rnd: int) -> str:
    """The empty file round ``rnd``'s queue markers are hard links of (:func:`make_markers`)."""
    return posixpath.join("rounds", f"{rnd}.marker")


def make_markers(root: str, names: list[str], source: str, dir_fd: int | None = None) -> None:
    """Empty files ``names`` (paths relative to ``root``, or to ``dir_fd`` when given) as hard
    links of the empty file ``source``, which this makes first.

    Only a marker's name matters, and a link costs a directory entry where a new file costs
    an inode too: 30 µs against up to 1 ms of kernel time each in the test machine's crowded
    ``/tmp`` (ext4), and a round of 1,000 tasks has 1,000 markers. Where links cannot be made
    (AFS forbids them across directories, ext4 allows 65,000 to a file) the rest are files."""
    def path(name: str) -> str:
        return name if dir_fd is not None else os.path.join(root, name)

    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(path(source), flags, 0o600, dir_fd=dir_fd))
    linking = True
    for name in names:
        if linking:
            try:
                os.link(path(source), path(name), src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
                continue
            except FileExistsError:
                continue  # made before (an engine restarted mid-release)
            except OSError:
                linking = False
        os.close(os.open(path(name), flags, 0o600, dir_fd=dir_fd))


def parse_marker(name: str) -> tuple[int, int, int, int | None] | None:
    """``R-FILE.A[.J[.S]]`` -> (round, file, attempt, job or None); None for another name.
    The slot ``S`` (:func:`marker_slot`) is the job's business: the engine requeues by job."""
    head, _, rest = name.partition("-")
    parts = rest.split(".")
    if not head.isdigit() or len(parts) not in (2, 3, 4) or not all(p.isdigit() for p in parts):
        return None
    job = int(parts[2]) if len(parts) >= 3 else None
    return int(head), int(parts[0]), int(parts[1]), job


def marker_slot(name: str) -> int | None:
    """The claim loop (slot) of a claim ``R-FILE.A.J.S``; None for a claim of a one-slot job."""
    parts = name.split(".")
    return int(parts[3]) if len(parts) == 4 and parse_marker(name) is not None else None


def claimer(job: int, slot: int | None) -> str:
    """What a claim's name ends with: the job, and the loop when the job has several."""
    return str(job) if slot is None else f"{job}.{slot}"


class PilotQueue:
    """The queue of one round in the run directory ``root`` (a path on this host). With
    ``dir_fd`` (the worker's open run directory) every name is reached through it, so a
    directory put in place of the run's is not seen (``rundir.LocalRunDir``)."""

    def __init__(self, root: str, rnd: int, dir_fd: int | None = None) -> None:
        self.root = root
        self.rnd = rnd
        self.dir_fd = dir_fd

    def _rename(self, source: str, target: str) -> None:
        if self.dir_fd is None:
            os.rename(os.path.join(self.root, source), os.path.join(self.root, target))
        else:
            os.rename(source, target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    def _listdir(self, directory: str) -> list[str]:
        if self.dir_fd is None:
            return os.listdir(os.path.join(self.root, directory))
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                     dir_fd=self.dir_fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def _mine(self, directory: str) -> list[tuple[str, int, int, int | None]]:
        found = []
        for name in sorted(self._listdir(directory)):
            parsed = parse_marker(name)
            if parsed is not None and parsed[0] == self.rnd:
                found.append((name, *parsed[1:]))
        return found

    def held(self) -> bool:
        """Whether the round still holds chunks back (:func:`held_name`)."""
        name = held_name(self.rnd)
        try:
            if self.dir_fd is None:
                os.stat(os.path.join(self.root, name))
            else:
                os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def waiting(self) -> list[int]:
        """The chunk files of this round still in the queue."""
        return [file for _, file, _, _ in self._mine(QUEUE)]

    def claim(self, job: int, size: Callable[[int], int], slot: int | None = None
              ) -> list[int]:
        """Claim up to ``size(waiting)`` chunk files for worker job ``job`` (its claim loop
        ``slot``, if it has several); [] when the queue is empty or ``size`` says 0. A marker
        another worker renamed first is skipped."""
        waiting = self._mine(QUEUE)
        wanted = size(len(waiting)) if waiting else 0
        claimed: list[int] = []
        for name, file, _, _ in waiting:
            if len(claimed) >= wanted:
                break
            try:
                self._rename(posixpath.join(QUEUE, name),
                             posixpath.join(CLAIMED, f"{name}.{claimer(job, slot)}"))
            except FileNotFoundError:
                continue  # another worker was first
            claimed.append(file)
        return claimed

    def claims(self) -> dict[int, tuple[int, int]]:
        """Each claimed chunk file -> (times claimed, job that claimed it last)."""
        found: dict[int, tuple[int, int]] = {}
        for _, file, attempt, job in self._mine(CLAIMED):
            if job is not None and attempt + 1 > found.get(file, (0, 0))[0]:
                found[file] = (attempt + 1, job)
        return found

    def requeue(self, jobs: set[int], has_outcome: Callable[[int], bool],
                slot: int | None = None) -> tuple[list[int], list[int]]:
        """Give back what the ended worker jobs ``jobs`` claimed (with ``slot``: only what
        that claim loop claimed) but left without an outcome: (files back in the queue, files
        claimed :data:`MAX_CLAIMS` times, left claimed).

        A loop runs its claims in order, so of a loop's claims without an outcome only the
        first was running when it died: that one counts a claim; the others never started
        and go back as they were (a task that kills its loop must not take the tasks claimed
        with it down too)."""
        back: list[int] = []
        kept: list[int] = []
        running: set[str] = set()  # the loops whose running claim was seen
        for name, file, attempt, job in self._mine(CLAIMED):
            if job not in jobs or (slot is not None and marker_slot(name) != slot):
                continue
            if has_outcome(file):
                continue
            loop = name.split(".", 2)[2]  # J or J.S: the claim loop
            tried = loop not in running
            running.add(loop)
            if tried and attempt + 1 >= MAX_CLAIMS:
                kept.append(file)
                continue
            try:
                self._rename(posixpath.join(CLAIMED, name),
                             queue_marker(self.rnd, file, attempt + tried))
            except FileNotFoundError:
                continue
            back.append(file)
        return back, kept


@dataclass
class Sizer:
    """How many chunks a worker claims at once: one until a task time is measured, then
    enough for about :data:`CLAIM_TARGET` seconds, but never more than a fair share of the
    queue among ``workers`` (so free workers are not left idle while one holds a backlog),
    and only what fits before the job's end (``left`` seconds), measured time x size with a
    margin: 0 stops the worker."""

    workers: int
    target: float = CLAIM_TARGET
    spent: float = 0.0
    ran: int = 0

    def add(self, seconds: float) -> None:
        self.spent += seconds
        self.ran += 1

    def size(self, waiting: int, left: float | None) -> int:
        if not self.ran:
            return 1
        mean = self.spent / self.ran
        wanted = max(1, int(self.target / mean)) if mean > 0 else waiting
        wanted = min(wanted, max(1, math.ceil(waiting / max(1, self.workers))))
        if left is not None:
            fits = int((left - END_MARGIN) / (mean * TIME_SAFETY)) if mean > 0 else wanted
            wanted = min(wanted, max(0, fits))
        return wanted


def job_end_time(walltime: float, started: float) -> float | None:
    """When this batch job will be ended (epoch seconds), or None if it has no limit:
    SLURM's own answer (``squeue -o %e`` for ``$SLURM_JOB_ID``), else ``walltime`` seconds
    after ``started``."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        try:
            out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout.strip()
            return time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S"))
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # no squeue here, or "N/A"/"UNLIMITED": the configured walltime decides
    return started + walltime if walltime > 0 else None


@dataclass(frozen=True)
class PilotOptions:
    """A worker job's command line after ``pilot RUN_DIR --key-file PATH``. ``slots``: claim
    loops the job runs at once; 0 = as the round's spec says (``spec["slots"]``, else 1)."""

    rnd: int
    job: int
    workers: int
    walltime: float = 0.0
    slots: int = 0

    @classmethod
    def parse(cls, args: list[str]) -> PilotOptions:
        """``--round R --job J --workers N [--walltime SECONDS] [--slots K]``; ValueError
        names a bad one."""
        if len(args) % 2:
            raise ValueError(f"options come in pairs: {' '.join(args)}")
        given = dict(zip(args[::2], args[1::2], strict=True))
        unknown = set(given) - {"--round", "--job", "--workers", "--walltime", "--slots"}
        if unknown or not {"--round", "--job", "--workers"} <= set(given):
            raise ValueError(f"unknown or missing options in: {' '.join(args)}")
        return cls(int(given["--round"]), int(given["--job"]), int(given["--workers"]),
                   float(given.get("--walltime", 0)), int(given.get("--slots", 0)))


if TYPE_CHECKING:
    from remotemap.worker_run import WorkerRun


def claim_loop(run: WorkerRun, job: int, slot: int | None, end: float | None,
               options: PilotOptions) -> int:
    """Claim (as ``job``'s loop ``slot``) and run chunks until none is left or none fits before
    ``end``; the number of chunks run. Each chunk runs as ``run_chunks`` runs it (its outcome
    sealed, what its tasks leave behind undone before the next)."""
    from remotemap.worker_run import chunk_runner

    queue = PilotQueue(run.rundir.root, options.rnd, run.rundir.fd)
    sizer = Sizer(options.workers * max(1, options.slots))  # every loop of the round
    done = 0
    with chunk_runner(run) as run_one:
        while True:
            left = None if end is None else end - time.time()
            files = queue.claim(job, functools.partial(sizer.size, left=left), slot)
            if not files and queue.held():
                time.sleep(HELD_WAIT)  # the rest comes once the canary chunk went well
                continue
            if not files:
                return done
            for file in files:
                started = time.monotonic()
                run_one(file)
                sizer.add(time.monotonic() - started)
                done += 1
