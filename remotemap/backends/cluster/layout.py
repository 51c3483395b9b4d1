"""Every on-disk name a cluster run adds to the run directory of ``remotemap.protocol``.

A cluster run directory holds protocol's files (``function.pkl``, ``chunks/``, ``outcomes/``,
``logs/``, ``run.json``: named by ``remotemap.protocol`` and nowhere else) and, per round N::

    rounds/N.json          the round's spec (what the engine runs)
    rounds/N.status.json   what soma-workflow knows of each job, rewritten by the engine
    rounds/N.lock          flock'ed by the round's one engine
    rounds/N.log           the engine's own output
    rounds/N.cancel        present: the engine stops the round's jobs
    swf/N/                 soma-workflow's state for the round (sqlite database, transfers)
    logs/job-N-J.out|.err  stdout and stderr of job J of round N
    queue/N-FILE.A         chunk FILE of round N waiting for a worker job (``remotemap.pilot``)
    claimed/N-FILE.A.J     the same, claimed by worker job J

Names are relative to the run directory (``RunFiles`` takes them so); :class:`RoundPaths`
gives the absolute paths the engine uses on the submitting host.

Standard library only: the cluster engine imports this module before it detaches, and must
answer fast (``tests/test_layers_worker.py`` holds it to a list of modules). That is why the
two directory names shared with ``remotemap.protocol`` are spelled here again instead of
imported (protocol loads cloudpickle); ``tests/test_cluster_verdict.py`` checks they agree.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

ROUNDS = "rounds"
SOMA_WORKFLOW = "swf"
#: ``remotemap.protocol.LOGS``: the run's log directory, which also holds the jobs' output.
LOGS = "logs"
#: ``remotemap.protocol.OUTCOMES``: where each task's outcome file appears.
OUTCOMES = "outcomes"
#: ``remotemap.pilot``'s queue of a round run by worker jobs, and their claims.
QUEUE = "queue"
CLAIMED = "claimed"
#: The subdirectories of a cluster run directory: protocol's (chunks, outcomes, logs) and ours.
SUBDIRS = ("chunks", OUTCOMES, LOGS, ROUNDS, SOMA_WORKFLOW, QUEUE, CLAIMED)

#: soma-workflow's sqlite database, in a round's state directory (``round_state_dir_name``).
SWF_DATABASE = "soma_workflow.db"

_SPEC = re.compile(r"(\d+)\.json")


def spec_name(rnd: int) -> str:
    return posixpath.join(ROUNDS, f"{rnd}.json")


def status_name(rnd: int) -> str:
    return posixpath.join(ROUNDS, f"{rnd}.status.json")


def cancel_name(rnd: int) -> str:
    return posixpath.join(ROUNDS, f"{rnd}.cancel")


def lock_name(rnd: int) -> str:
    return posixpath.join(ROUNDS, f"{rnd}.lock")


def engine_log_name(rnd: int) -> str:
    return posixpath.join(ROUNDS, f"{rnd}.log")


def round_state_dir_name(rnd: int) -> str:
    """soma-workflow's state directory for round ``rnd`` (its database and transfer dir)."""
    return posixpath.join(SOMA_WORKFLOW, str(rnd))


def spec_round(name: str) -> int | None:
    """The round number of a name listed in ``rounds/`` when it is a round's spec, else None
    (``3.json`` -> 3; ``3.status.json`` -> None)."""
    match = _SPEC.fullmatch(name)
    return int(match.group(1)) if match else None


def outcome_file(file: int) -> str:
    """The name, in ``OUTCOMES``, of chunk file ``file``'s outcome (``protocol.outcome_name``)."""
    return f"{file:06d}.pkl"


def job_name(run_id: str, rnd: int, job: int) -> str:
    """The scheduler's name of job ``job`` of round ``rnd`` (shown by squeue and sacct)."""
    return f"rm-{run_id}-{rnd}-{job}"


def job_log_name(rnd: int, job: int, stream: str) -> str:
    """Where job ``job`` of round ``rnd`` writes its stdout (``out``) or stderr (``err``)."""
    return posixpath.join(LOGS, f"job-{rnd}-{job}.{stream}")


@dataclass(frozen=True)
class RoundPaths:
    """The absolute paths of one round's files under the run directory ``root``."""

    root: str
    rnd: int

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    @property
    def spec(self) -> str:
        return self._path(spec_name(self.rnd))

    @property
    def status(self) -> str:
        return self._path(status_name(self.rnd))

    @property
    def cancel(self) -> str:
        return self._path(cancel_name(self.rnd))

    @property
    def lock(self) -> str:
        return self._path(lock_name(self.rnd))

    @property
    def engine_log(self) -> str:
        return self._path(engine_log_name(self.rnd))

    @property
    def round_state_dir(self) -> str:
        return self._path(round_state_dir_name(self.rnd))

    @property
    def rounds_dir(self) -> str:
        return self._path(ROUNDS)
