"""The functions the benchmarks send to workers.

They live in an importable module (not ``__main__``) so every contender ships them by
reference, and the module imports only what an interpreter has loaded at start anyway: a fresh
interpreter that loads a task pays for the task's own imports only (numpy arrives with a numpy
argument, not with this module).
"""

from __future__ import annotations

import os
import time
from typing import Any


def add_one(x: int) -> int:
    """The trivial task: all of its cost is the framework's."""
    return x + 1


def worker_pid(delay: float) -> int:
    """Which process ran the task; the delay lets every worker of a pool take one."""
    time.sleep(delay)
    return os.getpid()


def spin(n: int) -> int:
    """A pure-Python CPU loop holding the GIL; :func:`calibrate_spin` sizes it in seconds."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def array_sum(a: Any) -> float:
    """Touches every byte of an array argument (a numpy array: ``sum`` reads all of it)."""
    return float(a.sum())


#: What a fresh interpreter runs for one task: ``python -c LOADER TASK.pkl OUT.pkl``. It is the
#: "one task per fresh process" way (pyhrf's ``local_with_dumps`` before the worker server).
SUBPROCESS_LOADER = (
    "import pickle, sys\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    func, args = pickle.load(f)\n"
    "value = func(*args)\n"
    "with open(sys.argv[2], 'wb') as f:\n"
    "    pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)\n"
)


def byte_total(a: Any) -> int:
    """Touches every byte of an array argument, exactly: unlike a float sum, whose last bit
    depends on how the copy that arrived is aligned in memory (dask's, for one)."""
    return int(a.view("u1").sum(dtype="u8"))
