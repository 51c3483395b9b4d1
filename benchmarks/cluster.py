"""remote_map's ``cluster`` mode: 1,000 trivial tasks, chunked into jobs vs one job per task.

Two schedulers, both real: soma-workflow's own local scheduler, and a private single-node
SLURM (16 slots, started here; needs root and ``scripts/install-slurm.sh``)::

    .venv/bin/python -m benchmarks.cluster [--tasks 1000] [--per-task-tasks 1000]
                                           [--scheduler local|slurm|both] [--repeats 1]

Each figure is end to end, as a user sees it: staging the tasks, starting the engine,
submitting the workflow, running the jobs, collecting every result, waiting for the engine
to finish and removing the run directory. Targets for 1,000 tasks chunked: local <= 5 s,
SLURM <= 20 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from remotemap import remote_map

TARGETS = {"local": 5.0, "slurm": 20.0}


def add_one(x: int) -> int:
    return x + 1


def timed(n: int, options: dict[str, Any]) -> float:
    started = time.perf_counter()
    got = remote_map(add_one, [(i,) for i in range(n)], mode="cluster", progress=False, **options)
    elapsed = time.perf_counter() - started
    assert got == [i + 1 for i in range(n)]
    return elapsed


@contextlib.contextmanager
def scheduler_options(scheduler: str, shared: str) -> Iterator[dict[str, Any]]:
    if scheduler == "local":
        yield {"scheduler": "local", "shared_dir": shared}
        return
    from tests.infra.slurm import SingleNodeSlurm

    with SingleNodeSlurm() as cluster:
        options = {
            "scheduler": "slurm",
            "slurm_conf": str(cluster.conf_path),
            "shared_dir": shared,
            "poll_interval": 1.0,
        }
        timed(4, options)  # SLURM's first scheduling round after start is slower: warm up
        yield options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument(
        "--per-task-tasks",
        type=int,
        default=1000,
        help="tasks for the one-job-per-task baseline (scaled to --tasks)",
    )
    parser.add_argument("--scheduler", choices=["local", "slurm", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    schedulers = ["local", "slurm"] if args.scheduler == "both" else [args.scheduler]
    failed = False
    # The registry of runs goes to a temp dir, not the user's state dir.
    with tempfile.TemporaryDirectory(prefix="remotemap-bench-") as tmp:
        os.environ["XDG_STATE_HOME"] = os.path.join(tmp, "state")
        for scheduler in schedulers:
            with scheduler_options(scheduler, os.path.join(tmp, "runs")) as options:
                chunked = min(timed(args.tasks, options) for _ in range(args.repeats))
                n = args.per_task_tasks
                per_task = timed(n, {**options, "tasks_per_job": 1}) * args.tasks / n
                target = TARGETS[scheduler]
                verdict = "ok" if chunked <= target else "OVER TARGET"
                failed = failed or chunked > target
                scaled = "" if n == args.tasks else f" (measured on {n}, scaled)"
                print(
                    f"{scheduler:<6} {args.tasks} tasks chunked: {chunked:6.2f} s "
                    f"(target <= {target:g} s: {verdict}); one job per task: "
                    f"{per_task:6.2f} s{scaled}; x{per_task / chunked:.1f}",
                    flush=True,
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
