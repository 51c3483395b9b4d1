"""The ``[cluster]`` settings of a run, and what they become: a round's spec, the scheduler's
options, the interpreters, how often the caller looks at a run.

Imported by the caller only (never by the engine): the engine reads what it needs from the
round's spec (``round_spec``), written as JSON in the run directory.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from remotemap.pilot import held_name, queue_marker
from remotemap.tasks import auto_chunksize

SCHEDULERS = ("local", "slurm", "pbspro", "drmaa")
#: Jobs a round aims at on a batch scheduler when ``tasks_per_job`` is 0 (automatic).
AUTO_JOBS = 32
#: Claim loops a round run by worker jobs starts with when ``worker_jobs`` and
#: ``worker_slots`` are 0 (automatic): the test SLURM's 16 slots, say.
AUTO_WORKERS = 16
#: Slots (claim loops) per worker job when both are automatic: 16 loops in 2 jobs of 8, as
#: dask-jobqueue's usual 2 x 8 - two interpreters to start instead of 16.
AUTO_SLOTS = 8
#: Seconds between two looks at a run's files (round status, outcomes) when this machine
#: submits: reading them costs a few system calls.
LOCAL_POLL_INTERVAL = 0.05
#: The same through ``cluster.host``: each look is an SFTP round trip (or a tar stream).
SSH_POLL_INTERVAL = 0.3


def poll_interval(settings: Mapping[str, Any]) -> float:
    """Seconds between two looks at the files of a run made with ``settings``."""
    return SSH_POLL_INTERVAL if settings.get("host") else LOCAL_POLL_INTERVAL


def cluster_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[cluster]`` section's defaults, overridden by ``given``, checked; JSON-able."""
    # Imported here, not above: the schema module is loaded only by a caller that makes
    # settings (jobs and the engine never do).
    from remotemap.backends.cluster.options import CLUSTER
    from remotemap.config.schema import defaults_of

    settings = {**defaults_of(CLUSTER), **dict(given)}
    if settings["scheduler"] not in SCHEDULERS:
        raise ValueError(f"cluster.scheduler: {settings['scheduler']!r} is not one of "
                         f"{', '.join(SCHEDULERS)}")
    if settings["walltime"]:
        walltime_seconds(settings["walltime"])  # refuse a malformed one now
    for option in settings["native_options"]:
        if "\n" in option or not option.strip():
            raise ValueError(f"cluster.native_options: bad option {option!r}")
    return settings


def walltime_seconds(text: str) -> int:
    """Slurm's time formats ("M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S") in seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"cluster.walltime: {text!r} is not a time limit (minutes, M:S, "
                         "H:M:S, D-H, D-H:M or D-H:M:S)")
    days, first, second, third = match.groups()
    numbers = [int(first)] + [int(n) for n in (second, third) if n is not None]
    if days is not None:
        hours, minutes, seconds = [*numbers, 0, 0][:3]
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(numbers) == 3:
        return numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    return numbers[0] * 60 + (numbers[1] if len(numbers) == 2 else 0)


def native_options(settings: Mapping[str, Any], slots: int = 1) -> tuple[list[str], list[str]]:
    """The scheduler options (``#SBATCH``/``#PBS`` lines) and the config key each comes from.
    ``slots``: claim loops per worker job, each with ``cpus_per_task`` CPUs (1 if unset)."""
    scheduler = settings["scheduler"]
    options: list[tuple[str, str]] = []
    if slots > 1:
        cpus = int(settings["cpus_per_task"] or 1) * slots
        settings = {**settings, "cpus_per_task": cpus}
    cpus_key = "cluster.worker_slots" if slots > 1 else "cluster.cpus_per_task"
    if scheduler in ("slurm", "drmaa"):
        for key, flag in (("walltime", "--time"), ("memory", "--mem"),
                          ("cpus_per_task", "--cpus-per-task")):
            if settings[key]:
                options.append((cpus_key if key == "cpus_per_task" else f"cluster.{key}",
                                f"{flag}={settings[key]}"))
    elif scheduler == "pbspro":
        if settings["walltime"]:
            hours, rest = divmod(walltime_seconds(settings["walltime"]), 3600)
            wall = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
            options.append(("cluster.walltime", f"-l walltime={wall}"))
        if settings["memory"]:
            options.append(("cluster.memory", f"-l mem={settings['memory']}"))
        if settings["cpus_per_task"]:
            options.append((cpus_key, f"-l ncpus={settings['cpus_per_task']}"))
    if scheduler != "local":
        options += [("cluster.native_options", o) for o in settings["native_options"]]
    return [o for _, o in options], [k for k, _ in options]


def tasks_per_job(settings: Mapping[str, Any], n_tasks: int) -> int:
    if settings.get("tasks_per_job"):
        return int(settings["tasks_per_job"])
    if settings["scheduler"] == "local":
        cpus = (os.cpu_count() or 1) if not settings.get("host") else 4
        return auto_chunksize(n_tasks, cpus)
    return max(1, math.ceil(n_tasks / AUTO_JOBS))


def dispatch(settings: Mapping[str, Any], n_tasks: int, task_timeout: float | None) -> str:
    """How a round of ``n_tasks`` reaches the jobs: ``jobs`` (a job per group of
    ``tasks_per_job`` tasks) or ``workers`` (worker jobs pull the tasks; ``remotemap.pilot``).

    ``timeout=`` always gives ``jobs`` (the per-task limit is enforced per job). ``auto``
    gives ``workers`` on a batch scheduler (not ``local``) when ``tasks_per_job`` is not set
    and there are more tasks than ``AUTO_JOBS`` (where one job per task would cost a
    submission each, or jobs would run several tasks in turn while slots may stand idle);
    else ``jobs``: few tasks, each its own job, accounted for per job.
    """
    chosen = str(settings.get("dispatch") or "auto")
    if task_timeout:
        return "jobs"
    if chosen != "auto":
        return chosen
    batch = settings["scheduler"] != "local" and not settings.get("tasks_per_job")
    return "workers" if batch and n_tasks > AUTO_JOBS else "jobs"


def worker_layout(settings: Mapping[str, Any], n_tasks: int) -> tuple[int, int]:
    """(worker jobs, slots per job) a round of ``n_tasks`` starts with, never more loops
    than tasks. Both automatic: :data:`AUTO_WORKERS` loops in jobs of :data:`AUTO_SLOTS`
    (16 tasks or more: 2 x 8). ``worker_jobs`` alone: one slot each, as before slots
    existed. ``worker_slots`` alone: enough jobs for :data:`AUTO_WORKERS` loops. Automatic
    slots are no more than the partition's nodes take (``slots_that_fit``, read by
    ``limits.check_partition``)."""
    jobs, slots = int(settings.get("worker_jobs") or 0), int(settings.get("worker_slots") or 0)
    loops = max(1, min(n_tasks, AUTO_WORKERS))
    if not slots:
        fit = int(settings.get("slots_that_fit") or AUTO_SLOTS)
        slots = 1 if jobs else min(AUTO_SLOTS, loops, fit)
    if not jobs:
        jobs = math.ceil(loops / slots)
    jobs = max(1, min(jobs, n_tasks))
    return jobs, max(1, min(slots, math.ceil(n_tasks / jobs)))


def queue_markers(spec: Mapping[str, Any]) -> list[str]:
    """The queue of a round run by worker jobs: one empty marker per chunk file; with
    ``spec["canary"]`` only the first one and the flag that holds the others back (the
    engine releases them: ``pilots.Keeper``)."""
    if spec.get("dispatch") != "workers":
        return []
    rnd, files = int(spec["round"]), [int(file) for file, _ in spec["files"]]
    if spec.get("canary"):
        return [queue_marker(rnd, files[0]), held_name(rnd)]
    return [queue_marker(rnd, file) for file in files]


def job_python(settings: Mapping[str, Any]) -> str:
    """The interpreter the jobs run (default: this one when this machine submits).

    When this machine submits, its user runs the jobs: ``~`` is that user's home here."""
    if not settings.get("host"):
        return os.path.expanduser(str(settings.get("python") or sys.executable))
    return str(settings.get("python") or "python3")


def round_spec(settings: Mapping[str, Any], *, run_id: str, number: int,
               files: list[tuple[int, int]], env: Mapping[str, str],
               task_timeout: float | None, function: str) -> dict[str, Any]:
    """What the engine needs to run one round (written to ``RUN/rounds/N.json``)."""
    ids = [f for f, _ in files]
    how = dispatch(settings, len(files), task_timeout)
    slots = 1
    if how == "workers":
        n_jobs, slots = worker_layout(settings, len(files))
        jobs: list[list[int]] = [[] for _ in range(n_jobs)]
    else:
        per_job = tasks_per_job(settings, len(files))
        jobs = [ids[i : i + per_job] for i in range(0, len(ids), per_job)]
    native, keys = native_options(settings, slots)
    local = settings["scheduler"] == "local"
    return {
        "run_id": run_id, "round": number, "scheduler": settings["scheduler"],
        "python": job_python(settings), "queue": "" if local else settings["queue"],
        "native": native, "native_keys": keys, "slurm_conf": settings["slurm_conf"],
        "env": dict(env), "task_timeout": task_timeout,
        "wrapper_walltime": walltime_seconds(settings["walltime"])
        if local and settings["walltime"] else 0,
        "poll_interval": settings["poll_interval"], "tick": 0.1, "proc_nb": 0,
        "function": function, "files": files,
        "jobs": jobs, "dispatch": how, "workers": len(jobs) if how == "workers" else 0,
        "slots": slots,
        "walltime_seconds": walltime_seconds(settings["walltime"]) if settings["walltime"]
        else 0,
    }


def engine_python(settings: Mapping[str, Any]) -> str:
    """The interpreter that runs the engine: this one here, else ``cluster.python``."""
    if not settings.get("host"):
        return sys.executable
    return str(settings.get("python") or "python3")


def engine_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """What the engine process starts with (SLURM_CONF in its real environment, so tools that
    look for a cluster's processes by it find the engine too)."""
    return {"SLURM_CONF": str(settings["slurm_conf"])} if settings.get("slurm_conf") else {}
