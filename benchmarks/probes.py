"""Measurements behind the proposals in ``docs/benchmarks.md``: why a figure is what it is.

Run ``python -m benchmarks.probes`` (every probe) or ``python -m benchmarks.probes NAME ...``.
Each probe runs in its own fresh interpreter, so joblib's and remote_map's use of loky's
process-wide executor cannot disturb one another. Public APIs only: the probes keep working
while remotemap's internals change. Every figure is the best of a few runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

if __package__ in (None, ""):  # run as a file: find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.contenders import ROOT, isolate_environment
from benchmarks.tasks import add_one, array_sum


def best_time(call: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def probe_imports() -> None:
    """What starting each kind of worker process costs before it runs anything."""
    commands = {
        "python -c pass": "pass",
        "a remotemap worker server (import remotemap.worker)": "import remotemap.worker",
        "a loky worker from joblib (joblib + numpy come along)": (
            "import joblib.externals.loky.backend.popen_loky_posix"
        ),
        "import cloudpickle": "import cloudpickle",
        "import numpy": "import numpy",
    }
    for label, code in commands.items():

        def call(c: str = code) -> object:
            return subprocess.run([sys.executable, "-c", c], check=True)

        took = best_time(call)
        print(f"imports  {label}: {took * 1e3:.0f} ms")


def probe_cold_local() -> None:
    """Where the first ``remote_map(mode="local")`` call of a process spends its time."""
    started = time.perf_counter()
    import remotemap

    imported = time.perf_counter()
    import joblib.externals.loky  # noqa: F401  (what the local backend imports on first use)

    loky = time.perf_counter()
    remotemap.remote_map(add_one, [(1,)], mode="local", progress=False, n_jobs=2)
    first = time.perf_counter()
    remotemap.remote_map(add_one, [(1,)], mode="local", progress=False, n_jobs=2)
    second = time.perf_counter()
    print(
        f"cold local  import remotemap {imported - started:.3f} s, "
        f"import joblib.externals.loky {loky - imported:.3f} s, "
        f"first 1-task call (workers start) {first - loky:.3f} s, "
        f"second 1-task call {(second - first) * 1e3:.1f} ms"
    )


def probe_chunksize() -> None:
    """Overhead per tiny task of ``local`` against the number of chunks."""
    from remotemap import remote_map

    n = 10_000
    largs = [(i,) for i in range(n)]
    serial = best_time(lambda: [add_one(*a) for a in largs], 5)
    remote_map(add_one, largs, mode="local", progress=False, n_jobs=2)  # start the workers
    for chunksize in (0, 5000, 2500, 1250, 625, 250, 100):
        options: dict[str, Any] = {"chunksize": chunksize} if chunksize else {}

        def call(options: dict[str, Any] = options) -> object:
            return remote_map(add_one, largs, mode="local", progress=False, n_jobs=2, **options)

        per_task = (best_time(call, 5) - serial) / n * 1e6
        label = chunksize or "auto"
        print(f"chunks   local chunksize {label}: {per_task:.2f} us/task overhead")


def probe_warm_call() -> None:
    """Latency of a warm one-task call: the fixed cost every call pays."""
    from remotemap import remote_map

    remote_map(add_one, [(1,)], mode="local", progress=False, n_jobs=2)
    took = best_time(
        lambda: remote_map(add_one, [(1,)], mode="local", progress=False, n_jobs=2), 10
    )
    print(f"warm     local 1-task call: {took * 1e3:.2f} ms")


def probe_dumps_cost() -> None:
    """``local_with_dumps``: fixed cost per call (server start and stop) against cost per task.

    Fits elapsed = per_call + n * per_task on calls of 20 and 200 tasks.
    """
    from remotemap import remote_map

    def run(n: int) -> float:
        largs = [(i,) for i in range(n)]
        return best_time(
            lambda: remote_map(add_one, largs, mode="local_with_dumps", progress=False, n_jobs=2)
        )

    small, large = run(20), run(200)
    per_task = (large - small) / 180
    per_call = small - 20 * per_task
    print(
        f"dumps    local_with_dumps: {per_call * 1e3:.0f} ms per call (server start, stop, run "
        f"directory) + {per_task * 1e3:.2f} ms per task; 1 task: {run(1) * 1e3:.0f} ms"
    )


def _arrays(n: int, mb: int) -> list[tuple[Any, ...]]:
    import numpy as np

    return [(np.random.default_rng(i).random(mb * 1_000_000 // 8),) for i in range(n)]


def probe_big_joblib() -> None:
    """joblib's settings for large arguments (memmapping or not) on 16 x 50 MB."""
    from joblib import Parallel, delayed

    largs = _arrays(16, 50)
    settings: dict[str, dict[str, Any]] = {
        "default (memmap above 1 MB)": {},
        "max_nbytes=None (pickled through the pipe)": {"max_nbytes": None},
        "mmap_mode='r'": {"mmap_mode": "r"},
        "batch_size=1": {"batch_size": 1},
        "default, measured again last": {},
    }
    Parallel(n_jobs=2)(delayed(abs)(i) for i in range(4))
    for label, kwargs in settings.items():

        def call(kwargs: dict[str, Any] = kwargs) -> object:
            return Parallel(n_jobs=2, **kwargs)(delayed(array_sum)(*a) for a in largs)

        print(f"big      joblib {label}: {800 / best_time(call):.0f} MB/s")
    import hashlib

    from joblib import hash as joblib_hash

    data = largs[0][0]
    print(f"big      md5 of one 50 MB array: {best_time(lambda: hashlib.md5(data)) * 1e3:.0f} ms")
    print(f"big      joblib.hash of it: {best_time(lambda: joblib_hash(data)) * 1e3:.0f} ms")


def probe_big_dumps() -> None:
    """``local_with_dumps`` on 16 x 50 MB: does each forked child import numpy again?"""
    import numpy as np

    from remotemap import remote_map

    largs = _arrays(16, 50)
    functions: dict[str, Callable[..., Any]] = {
        "array_sum (server never imported numpy)": array_sum,
        "np.sum (loading it imports numpy in the server)": np.sum,
    }
    for label, func in functions.items():

        def call(func: Callable[..., Any] = func) -> object:
            return remote_map(func, largs, mode="local_with_dumps", progress=False, n_jobs=2)

        print(f"big      local_with_dumps {label}: {800 / best_time(call, 2):.0f} MB/s")


PROBES: dict[str, Callable[[], None]] = {
    "imports": probe_imports,
    "cold_local": probe_cold_local,
    "chunksize": probe_chunksize,
    "warm_call": probe_warm_call,
    "dumps_cost": probe_dumps_cost,
    "big_joblib": probe_big_joblib,
    "big_dumps": probe_big_dumps,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--in-process"]:
        PROBES[args[1]]()
        return 0
    unknown = [a for a in args if a not in PROBES]
    if unknown:
        print(f"unknown probes {unknown}; valid: {', '.join(PROBES)}", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory(prefix="remotemap-bench-config-") as config_home:
        isolate_environment(config_home)
        for name in args or list(PROBES):
            command = [sys.executable, "-m", "benchmarks.probes", "--in-process", name]
            if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
                print(f"probe {name} failed", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
