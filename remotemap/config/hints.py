"""'did you mean ...?' for a misspelt or borrowed name: an option, a config key, a mode.

A name from another tool (``partition`` from SLURM, ``max_workers`` from concurrent.futures,
``mode="slurm"``) is not a typo, so difflib does not find what it means: a table of such
synonyms is looked up first, then difflib for the rest.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable, Sequence

#: An option or config key as other tools call it -> remotemap's name.
OPTION_SYNONYMS: dict[str, str] = {
    "partition": "queue", "queue_name": "queue",
    "time": "walltime", "time_limit": "walltime", "timelimit": "walltime",
    "wall_time": "walltime",
    "mem": "memory", "mem_per_job": "memory",
    "cpus": "cpus_per_task", "ncpus": "cpus_per_task", "cores": "cpus_per_task",
    "workers": "n_jobs", "processes": "n_jobs", "max_workers": "n_jobs",
    "n_workers": "n_jobs", "num_workers": "n_jobs", "nprocs": "n_jobs", "jobs": "n_jobs",
    "chunk_size": "chunksize", "batch_size": "chunksize",
    "retry": "retries", "max_retries": "retries",
    "time_out": "timeout",
    "hostname": "host", "username": "user", "login": "user",
    "identity_file": "key_file", "keyfile": "key_file", "key": "key_file",
    "workdir": "remote_dir", "work_dir": "remote_dir",
    "interpreter": "python", "python_executable": "python",
    "tmp_dir": "temp_dir", "tmpdir": "temp_dir",
    "environment": "env", "env_vars": "env",
    "sbatch_options": "native_options", "extra_options": "native_options",
}

#: A mode as other tools (or habits) call it -> remotemap's mode.
MODE_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("lan", "remote", "hosts", "network", "paramiko"), "ssh"),
    **dict.fromkeys(("slurm", "pbs", "pbspro", "sge", "hpc", "torque", "lsf", "drmaa",
                     "soma_workflow", "somaworkflow", "batch"), "cluster"),
    **dict.fromkeys(("processes", "process", "multiprocessing", "loky", "joblib", "parallel",
                     "pool"), "local"),
    **dict.fromkeys(("debug", "sequential", "inline", "sync", "none"), "serial"),
    **dict.fromkeys(("dumps", "files", "fork"), "local_with_dumps"),
}


def _normal(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def suggestion(name: object, valid: Sequence[str], synonyms: dict[str, str] | None = None,
               elsewhere: Iterable[str] = ()) -> str | None:
    """What ``name`` most likely meant among ``valid`` (then among ``elsewhere``), or None.

    The synonym table first (its answer must be a valid or elsewhere name), then the same name
    in another case, then difflib.
    """
    if not isinstance(name, str):
        return None
    others = [n for n in elsewhere if n not in valid]
    normal = _normal(name)
    meant = (synonyms or {}).get(normal)
    if meant is not None and (meant in valid or meant in others):
        return meant
    for pool in (valid, others):
        same = [n for n in pool if _normal(n) == normal]
        if same:
            return same[0]
        close = difflib.get_close_matches(name, list(pool), n=1)
        if close:
            return close[0]
    # a misspelt synonym: "parttion" is "partition", which is "queue"
    known = [s for s, meant in (synonyms or {}).items() if meant in valid or meant in others]
    close = difflib.get_close_matches(normal, known, n=1)
    return (synonyms or {})[close[0]] if close else None


def did_you_mean(name: object, valid: Sequence[str], synonyms: dict[str, str] | None = None,
                 elsewhere: Iterable[str] = (), prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for a message, or ``""`` when nothing is close."""
    meant = suggestion(name, valid, synonyms, elsewhere)
    return f" (did you mean {prefix + meant!r}?)" if meant is not None else ""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def caller_stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` that points at the first frame outside
    remotemap (the user's call), however deep in remotemap the warning is raised."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE + os.sep):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
