"""A workflow on ``cluster``: the graph as soma-workflow dependencies vs a round per ready batch.

The graph: ``--chains`` chains of ``--length`` trivial steps side by side, and one step that
joins their ends (Scipion's fan-out / fan-in, lengthened). Two ways to run it, both real:

* ``graph``: ``Workflow.run("cluster")``, the whole graph in one soma-workflow workflow, one
  job per step with dependencies: the batch side orders the jobs;
* ``rounds`` (the baseline): the same steps through a ``remotemap.Executor`` on ``cluster``,
  the generic path every mode has: each batch of ready steps goes out as a new round once the
  steps before it came back to this process.

::

    .venv/bin/python -m benchmarks.cluster_workflow [--chains 4] [--length 5]
                                                    [--scheduler local|slurm|both]
                                                    [--poll-interval 1.0]

On SLURM a step's job starts after soma-workflow's engine sees its prerequisites' jobs end
(``sacct``, every ``cluster.poll_interval`` seconds), so a chain pays about one poll interval
per step; the baseline hears of each step from its outcome file, but pays a new round (an
engine, a submission) per level of the graph.

SLURM needs root and ``scripts/install-slurm.sh`` (a private single-node SLURM is started).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cluster import scheduler_options
from remotemap import Executor, Result, Workflow


def step(*values: int) -> int:
    return sum(values) + 1


def build(chains: int, length: int) -> tuple[Workflow, int]:
    wf = Workflow("benchmark")
    ends = []
    for _ in range(chains):
        last = wf.add_step(step, prerequisites=[])
        for _ in range(length - 1):
            last = wf.add_step(step, Result(last))
        ends.append(last)
    join = wf.add_step(step, *[Result(e) for e in ends])
    return wf, join


def timed(how: str, chains: int, length: int, options: dict[str, Any]) -> float:
    wf, join = build(chains, length)
    started = time.perf_counter()
    if how == "graph":
        report = wf.run("cluster", **options)
    else:
        with Executor("cluster", **options) as executor:
            report = wf.run(executor=executor)
    elapsed = time.perf_counter() - started
    assert report.value(join) == chains * length + 1, report
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--length", type=int, default=5)
    parser.add_argument("--scheduler", choices=["local", "slurm", "both"], default="both")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="cluster.poll_interval (SLURM's sacct queries), seconds")
    args = parser.parse_args(argv)
    schedulers = ["local", "slurm"] if args.scheduler == "both" else [args.scheduler]
    steps = args.chains * args.length + 1
    print(f"{steps} steps: {args.chains} chains of {args.length}, joined")
    for scheduler in schedulers:
        with tempfile.TemporaryDirectory(prefix="rm-bench-wf-") as shared, \
                scheduler_options(scheduler, shared) as options:
            options["poll_interval"] = args.poll_interval
            graph = timed("graph", args.chains, args.length, options)
            rounds = timed("rounds", args.chains, args.length, options)
            print(f"{scheduler:6s} graph as dependencies {graph:6.1f} s   a round per ready "
                  f"batch {rounds:6.1f} s   ratio {rounds / graph:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
