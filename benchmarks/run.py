"""Measure remote_map's ``local`` and ``local_with_dumps`` modes against what users use instead.

Run from the project root::

    .venv/bin/python -m benchmarks.run [--quick] [--json PATH]

Four workloads, each run by every contender of :mod:`benchmarks.contenders` in this one
process (the cold start in fresh interpreters), printed as one table with the targets:

1. tiny tasks ``x + 1``: overhead per task = (elapsed - serial elapsed of the same tasks) / N;
   10,000 tasks, 200 for the contenders that start a process per task;
2. CPU-bound tasks of ~0.5 s (a pure-Python loop calibrated here): speedup = serial / parallel;
3. tasks with one large numpy argument each, returning ``a.sum()``: MB/s = bytes sent / elapsed;
4. cold start: in a fresh interpreter, a one-task call until its result (imports apart).

Every figure is the best of a few repeats (the least disturbed run; every repeat is in the
JSON); cheap calls are repeated more. Workloads 2 and 3 run the contenders in turns, one call
each per round, so that other load on the machine falls on all of them alike. Contenders that
keep workers between calls (local, joblib, mp.Pool) are called untimed until every worker has
answered before they are timed; the others start processes on every call anyway. Under the
table: how much CPU other programs took, and how much the serial rounds varied (disturbance).

This module reads the options and runs the workloads in order; the workloads and their rows
are in :mod:`benchmarks.workloads`, how a call is timed in :mod:`benchmarks.timing`, the table,
notes and JSON in :mod:`benchmarks.report`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from collections.abc import Sequence

if __package__ in (None, ""):  # run as a file (python benchmarks/run.py): find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.contenders import CONTENDERS, Runner, isolate_environment
from benchmarks.cpumeter import CpuMeter
from benchmarks.report import Measurement, machine, print_report, source_state, write_json
from benchmarks.timing import N_JOBS, Clock, warm_up
from benchmarks.workloads import (
    FULL,
    QUICK,
    WORKLOADS,
    Row,
    Sizes,
    bench_big,
    bench_cold,
    bench_cpu,
    bench_tiny,
    interpreter_start_s,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark remote_map's local modes against joblib, mp.Pool, subprocess.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (<20 s)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)} (serial is always run)",
    )
    args = parser.parse_args(argv)
    for option, valid in (("workloads", WORKLOADS), ("contenders", CONTENDERS)):
        chosen = [w for w in getattr(args, option).split(",") if w]
        unknown = sorted(set(chosen) - set(valid))
        if unknown:
            parser.error(f"unknown {option}: {', '.join(unknown)}; valid: {', '.join(valid)}")
        setattr(args, option, chosen)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    names = [n for n in CONTENDERS if n == "serial" or n in args.contenders]
    clock = Clock()
    found = measure(names, args.workloads, sizes, args.quick, clock)
    today = datetime.date.today().isoformat()
    info, source = machine(), source_state()
    print_report(found, clock, today, info, source)
    if args.json:
        write_json(args.json, found, clock, today, info, source)
    return 0


def measure(names: list[str], workloads: list[str], sizes: Sizes, quick: bool,
            clock: Clock) -> Measurement:
    """Run the chosen workloads with the chosen contenders (serial always), in a private
    config home, metering the CPU other programs take during each."""
    load_before = os.getloadavg()
    rows: list[Row] = []
    others: dict[str, float | None] = {}
    meter = CpuMeter()
    benches = {"tiny": bench_tiny, "cpu": bench_cpu, "big": bench_big}
    with tempfile.TemporaryDirectory(prefix="remotemap-bench-config-") as config_home:
        isolate_environment(config_home)
        # mp.Pool forks: start it first, while this process is small and has no other threads.
        order = sorted(names, key=lambda n: n != "mp.Pool")
        runners = {name: Runner(name, N_JOBS) for name in order}
        resets = 0
        try:
            if "mp.Pool" in runners:
                warm_up(runners["mp.Pool"])
            by_column = {name: runners[name] for name in names}
            for workload, bench in benches.items():
                if workload in workloads:
                    meter.start()
                    rows += bench(by_column, sizes, clock)
                    others[workload] = meter.others_share()
        finally:
            for runner in runners.values():
                resets += runner.foreign_executor_resets
                runner.close()
        if "cold" in workloads:
            meter.start()
            rows += bench_cold(names, sizes, clock)
            others["cold"] = meter.others_share()
        interpreter = interpreter_start_s()
    return Measurement(sizes, quick, names, rows, others, resets, interpreter, load_before)


if __name__ == "__main__":
    sys.exit(main())
