"""``cluster`` on SLURM: worker jobs that pull tasks (``dispatch="workers"``) against one job
per group of tasks (``dispatch="jobs"``), side by side in one run on a private single-node
SLURM (16 slots, started here; needs root and the SLURM packages)::

    .venv/bin/python -m benchmarks.pilot [--trivial 1000] [--sleepers 100] [--repeats 3]

Two workloads: many trivial tasks (``x + 1``) and ``time.sleep(1)`` tasks (16 slots: ideal
about ``sleepers / 16`` seconds plus one job start). Each figure is end to end (staging,
engine, jobs, every result, clean-up); the two ways take turns, and the report gives the
median of each and their ratio. Nothing here is asserted in the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from remotemap import remote_map

#: Slots of the test SLURM: one worker job per slot.
SLOTS = 16


def add_one(x: int) -> int:
    return x + 1


def sleep_one(x: int) -> int:
    time.sleep(1.0)
    return x


def timed(function: Callable[[int], int], n: int, options: dict[str, Any]) -> float:
    started = time.perf_counter()
    got = remote_map(function, [(i,) for i in range(n)], mode="cluster", progress=False,
                     **options)
    elapsed = time.perf_counter() - started
    assert got == [function(i) if function is add_one else i for i in range(n)]
    return elapsed


def compare(name: str, function: Callable[[int], int], n: int, options: dict[str, Any],
            repeats: int) -> str:
    ways: dict[str, dict[str, Any]] = {"jobs": {"dispatch": "jobs"}, "workers": {
        "dispatch": "workers",
        "worker_jobs": SLOTS}}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, extra in ways.items():  # taking turns: load changes hit both alike
            times[way].append(timed(function, n, {**options, **extra}))
            print(f"  {name} {way}: {times[way][-1]:.2f} s", file=sys.stderr, flush=True)
    jobs, workers = (statistics.median(times[w]) for w in ways)
    spread = {w: f"{min(t):.2f}-{max(t):.2f}" for w, t in times.items()}
    return (f"{name:<22} jobs {jobs:6.2f} s ({spread['jobs']})  workers {workers:6.2f} s "
            f"({spread['workers']})  workers/jobs {workers / jobs:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial", type=int, default=1000)
    parser.add_argument("--sleepers", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from tests.infra.slurm import SingleNodeSlurm

    with tempfile.TemporaryDirectory(prefix="remotemap-bench-") as tmp:
        os.environ["XDG_STATE_HOME"] = os.path.join(tmp, "state")  # not the user's registry
        with SingleNodeSlurm() as cluster:
            options = {"scheduler": "slurm", "slurm_conf": str(cluster.conf_path),
                       "shared_dir": os.path.join(tmp, "runs"), "poll_interval": 1.0}
            timed(add_one, 4, options)  # SLURM's first scheduling round is slower: warm up
            lines = [compare(f"{args.trivial} x add_one", add_one, args.trivial, options,
                             args.repeats),
                     compare(f"{args.sleepers} x sleep(1)", sleep_one, args.sleepers, options,
                             args.repeats)]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
