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
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/run.py): find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.contenders import (
    CONTENDERS,
    REUSES_WORKERS,
    ROOT,
    Largs,
    Runner,
    isolate_environment,
)
from benchmarks.cpumeter import CpuMeter
from benchmarks.tasks import add_one, array_sum, spin, worker_pid

N_JOBS = 2
#: Other processes using more than this share of the CPUs during a workload: a warning.
BUSY_SHARE = 0.10
#: Serial rounds of an interleaved workload differing by more than this: a warning.
DISTURBED_SPREAD = 1.15
WORKLOADS = ("tiny", "cpu", "big", "cold")
#: Contenders that start an OS process per task: too slow for 10,000 tiny tasks.
PROCESS_PER_TASK = ("local_with_dumps", "subprocess")
#: Rows whose contenders take turns, the serial loop included (one call of each per round).
INTERLEAVED_ROWS = ("cpu_speedup", "big_mb_per_s")
WARMUP: list[tuple[Any, ...]] = [(0.02,)] * (4 * N_JOBS)


#: Cheap calls are repeated beyond ``repeats`` while they have used less than this in all...
CHEAP_BUDGET_S = 1.0
#: ...up to this many calls: more samples for the best-of where they cost nothing.
CHEAP_MAX_REPEATS = 15


@dataclass(frozen=True)
class Sizes:
    tiny_tasks: int = 10_000
    tiny_process_tasks: int = 200
    cpu_tasks: int = 8
    cpu_seconds: float = 0.5
    big_tasks: int = 16
    big_mb: int = 50
    repeats: int = 3
    cpu_repeats: int = 3
    cold_repeats: int = 3
    cheap_budget_s: float = CHEAP_BUDGET_S


FULL = Sizes()
QUICK = Sizes(
    tiny_tasks=2_000,
    tiny_process_tasks=8,
    cpu_tasks=4,
    cpu_seconds=0.05,
    big_tasks=4,
    big_mb=5,
    repeats=1,
    cpu_repeats=1,
    cold_repeats=1,
    cheap_budget_s=0.2,
)


@dataclass(frozen=True)
class Target:
    contender: str
    limit: float
    higher_is_better: bool

    def met(self, value: float) -> bool:
        return value >= self.limit if self.higher_is_better else value <= self.limit

    def text(self, unit: str) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return f"{self.contender} {sign} {_fmt(self.limit)} {unit}"


@dataclass
class Cell:
    """One contender's figure for one row, with the raw timings it came from."""

    value: float
    n_tasks: int
    times_s: list[float]
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Row:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    cells: dict[str, Cell]
    #: (subject, baseline): the ratio column compares these two contenders.
    ratio_of: tuple[str, str] = ("local", "joblib")
    target: Target | None = None

    def ratio(self) -> float | None:
        """How many times better the subject is than the baseline (> 1: better)."""
        subject, baseline = (self.cells.get(name) for name in self.ratio_of)
        if subject is None or baseline is None or subject.value <= 0 or baseline.value <= 0:
            return None
        if self.higher_is_better:
            return subject.value / baseline.value
        return baseline.value / subject.value

    def met(self) -> bool | None:
        if self.target is None or self.target.contender not in self.cells:
            return None
        return self.target.met(self.cells[self.target.contender].value)


class Clock:
    """Progress lines on stderr, stamped with the seconds since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", file=sys.stderr, flush=True)


def warm_up(runner: Runner, attempts: int = 50) -> None:
    """Call until every one of the ``N_JOBS`` workers has answered (they start at their pace).

    A pool whose workers were just (re)started may run a short call on the first worker up;
    timing the next call would then count the start of the others.
    """
    for _ in range(attempts):
        if len(set(runner.map(worker_pid, WARMUP))) >= N_JOBS:
            return
    raise RuntimeError(f"{runner.name}: fewer than {N_JOBS} workers after {attempts} calls")


def timed_call(
    runner: Runner,
    func: Callable[..., Any],
    largs: Largs,
    expected: Sequence[Any],
    warm: bool = True,
) -> float:
    """Elapsed seconds of one call, checked against the expected results.

    A contender that keeps its workers gets an untimed warm-up call first: it costs
    nothing when the workers are already up, and starts them again when another contender
    sharing loky's process-wide executor (joblib, remote_map local) has replaced them.
    """
    if warm and runner.name in REUSES_WORKERS:
        warm_up(runner)
    started = time.perf_counter()
    values = runner.map(func, largs)
    elapsed = time.perf_counter() - started
    if list(values) != list(expected):
        raise AssertionError(f"{runner.name} returned wrong results for {func.__name__}")
    return elapsed


def timed_runs(
    runner: Runner,
    func: Callable[..., Any],
    largs: Largs,
    expected: Sequence[Any],
    repeats: int,
    budget_s: float = CHEAP_BUDGET_S,
) -> list[float]:
    """Elapsed seconds of at least ``repeats`` calls in a row (more when they are cheap).

    Nothing else runs in between, so only the first call needs a warm-up.
    """
    times: list[float] = []
    while len(times) < repeats or (sum(times) < budget_s and len(times) < CHEAP_MAX_REPEATS):
        times.append(timed_call(runner, func, largs, expected, warm=not times))
    return times


def interleaved_runs(
    runners: dict[str, Runner],
    func: Callable[..., Any],
    largs: Largs,
    expected: Sequence[Any],
    rounds: int,
) -> dict[str, list[float]]:
    """Elapsed seconds per contender, one call of each per round.

    Taking turns spreads whatever else loads the machine over every contender instead of
    letting it fall on whichever ran at that moment (serial included: the speedup's base).
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for _ in range(rounds):
        for name in order:
            times[name].append(timed_call(runners[name], func, largs, expected))
        # Every other round backwards: no contender always runs right after the same one,
        # and local and joblib restart loky's shared executor once a round, not twice.
        order.reverse()
    return times


def bench_tiny(runners: dict[str, Runner], sizes: Sizes, clock: Clock) -> list[Row]:
    """Workload 1: overhead per trivial task, in microseconds (and ms for one process a task)."""
    largs = [(i,) for i in range(sizes.tiny_tasks)]
    expected = [i + 1 for i in range(sizes.tiny_tasks)]
    serial_best: dict[int, float] = {}
    for n in {sizes.tiny_tasks, sizes.tiny_process_tasks}:
        serial_best[n] = min(
            timed_runs(runners["serial"], add_one, largs[:n], expected[:n], 2, sizes.cheap_budget_s)
        )
    overhead: dict[str, Cell] = {}
    n_big = sizes.tiny_tasks
    overhead["serial"] = Cell(
        serial_best[n_big] / n_big * 1e6,
        n_big,
        [serial_best[n_big]],
        note="work itself, not overhead",
    )
    for name, runner in runners.items():
        if name == "serial":
            continue
        n = sizes.tiny_process_tasks if name in PROCESS_PER_TASK else n_big
        times = timed_runs(
            runner, add_one, largs[:n], expected[:n], sizes.repeats, sizes.cheap_budget_s
        )
        per_task_us = (min(times) - serial_best[n]) / n * 1e6
        overhead[name] = Cell(
            per_task_us,
            n,
            times,
            note=f"{n} tasks" if n != n_big else "",
            extra={"elapsed_per_task_us": min(times) / n * 1e6},
        )
        clock.say(f"tiny  {name:<17} best {min(times):.4f} s for {n} tasks")
    rows = [
        Row(
            "tiny_overhead_us",
            f"1. {n_big:,} x (x+1): overhead/task",
            "us",
            False,
            overhead,
            target=Target("local", 1.0, False),
        )
    ]
    per_process = {
        name: Cell(cell.value / 1000, cell.n_tasks, cell.times_s, extra=cell.extra)
        for name, cell in overhead.items()
        if name in PROCESS_PER_TASK
    }
    if per_process:
        rows.append(
            Row(
                "tiny_process_per_task_ms",
                f"1b. {sizes.tiny_process_tasks} x (x+1), a process each: overhead/task",
                "ms",
                False,
                per_process,
                ratio_of=("local_with_dumps", "subprocess"),
                target=Target("local_with_dumps", 5.0, False),
            )
        )
    return rows


def calibrate_spin(seconds: float) -> int:
    """The ``spin`` argument that takes about ``seconds`` here (best of 3 timings)."""
    n = 50_000
    while True:
        started = time.perf_counter()
        spin(n)
        took = time.perf_counter() - started
        if took > 0.05:
            break
        n *= 4
    best = took
    for _ in range(2):
        started = time.perf_counter()
        spin(n)
        best = min(best, time.perf_counter() - started)
    return max(1, round(n * seconds / best))


def bench_cpu(runners: dict[str, Runner], sizes: Sizes, clock: Clock) -> list[Row]:
    """Workload 2: speedup of CPU-bound tasks over the serial loop (limit: the core count)."""
    n_loop = calibrate_spin(sizes.cpu_seconds)
    largs = [(n_loop,)] * sizes.cpu_tasks
    expected = [spin(n_loop)] * sizes.cpu_tasks
    times = interleaved_runs(runners, spin, largs, expected, sizes.cpu_repeats)
    serial = min(times["serial"])
    clock.say(f"cpu   serial            best {serial:.3f} s for {sizes.cpu_tasks} tasks")
    cells = {
        "serial": Cell(1.0, sizes.cpu_tasks, times["serial"], extra={"task_s": serial / len(largs)})
    }
    for name in runners:
        if name != "serial":
            cells[name] = Cell(serial / min(times[name]), sizes.cpu_tasks, times[name])
            clock.say(f"cpu   {name:<17} best {min(times[name]):.3f} s")
    title = f"2. {sizes.cpu_tasks} x {sizes.cpu_seconds:g} s CPU: speedup (limit {N_JOBS})"
    return [Row("cpu_speedup", title, "x", True, cells, target=Target("local", 1.9, True))]


def bench_big(runners: dict[str, Runner], sizes: Sizes, clock: Clock) -> list[Row]:
    """Workload 3: throughput of large array arguments, MB (10^6 bytes) sent per second."""
    import numpy as np

    n_items = sizes.big_mb * 1_000_000 // 8
    arrays = [np.random.default_rng(i).random(n_items) for i in range(sizes.big_tasks)]
    largs = [(a,) for a in arrays]
    total_mb = sizes.big_tasks * sizes.big_mb
    expected = [array_sum(a) for a in arrays]
    times = interleaved_runs(runners, array_sum, largs, expected, sizes.repeats)
    cells: dict[str, Cell] = {}
    for name in runners:
        note = "no transfer: summing in place" if name == "serial" else ""
        cells[name] = Cell(total_mb / min(times[name]), sizes.big_tasks, times[name], note=note)
        clock.say(f"big   {name:<17} best {min(times[name]):.3f} s for {total_mb} MB")
    title = f"3. {sizes.big_tasks} x {sizes.big_mb} MB array argument: throughput"
    return [Row("big_mb_per_s", title, "MB/s", True, cells, target=Target("local", 800, True))]


def bench_cold(names: Sequence[str], sizes: Sizes, clock: Clock) -> list[Row]:
    """Workload 4: fresh interpreter, one-task call to its result; import time apart."""
    first: dict[str, Cell] = {}
    imports: dict[str, Cell] = {}
    for name in names:
        if name == "serial":
            continue
        reports = [_cold_run(name) for _ in range(sizes.cold_repeats)]
        firsts = [r["first_result_s"] for r in reports]
        imps = [r["import_s"] for r in reports]
        median = {"median_s": statistics.median(firsts)}
        first[name] = Cell(min(firsts), 1, firsts, extra=median)
        imports[name] = Cell(min(imps), 1, imps, extra={"median_s": statistics.median(imps)})
        clock.say(f"cold  {name:<17} first result {min(firsts):.3f} s, import {min(imps):.3f} s")
    return [
        Row(
            "cold_first_result_s",
            "4. cold start: first result",
            "s",
            False,
            first,
            target=Target("local", 0.3, False),
        ),
        Row("cold_import_s", "4b. cold start: import time", "s", False, imports),
    ]


def _cold_run(name: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cold", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of {name} failed ({proc.returncode}):\n{proc.stderr}")
    report: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def interpreter_start_s(repeats: int = 5) -> float:
    """Best wall time of ``python -c pass`` with this interpreter, for scale."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def serial_spreads(rows: Sequence[Row]) -> dict[str, float]:
    """Slowest over fastest serial call of each interleaved workload: how disturbed it was."""
    spreads = {}
    for row in rows:
        serial = row.cells.get("serial")
        if row.key in INTERLEAVED_ROWS and serial is not None and len(serial.times_s) > 1:
            spreads[row.key] = max(serial.times_s) / min(serial.times_s)
    return spreads


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row], names: Sequence[str], judge: bool = True) -> str:
    """The rows as a Markdown table: contenders, then ratio, target and verdict."""
    header = ["workload (unit)", *names, "ratio vs baseline", "target", "met?"]
    lines = [header]
    for row in rows:
        cells = []
        for name in names:
            cell = row.cells.get(name)
            if cell is None:
                cells.append("-")
            else:
                mark = "*" if row.key == "tiny_overhead_us" and name in PROCESS_PER_TASK else ""
                cells.append(_fmt(cell.value) + mark)
        ratio = row.ratio()
        subject, baseline = row.ratio_of
        ratio_text = f"{ratio:.2f}x ({subject} vs {baseline})" if ratio is not None else "-"
        met = row.met() if judge else None
        lines.append(
            [
                f"{row.title} ({row.unit})",
                *cells,
                ratio_text,
                row.target.text(row.unit) if row.target else "-",
                "-" if met is None else ("yes" if met else "NO"),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        out.append("| " + " | ".join(t.ljust(w) for t, w in zip(line, widths, strict=True)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def source_state() -> dict[str, Any]:
    """The commit measured, and whether remotemap/ had uncommitted changes (read-only git)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.rstrip()  # keep the leading blanks of porcelain lines

    changed = git("status", "--porcelain", "--", "remotemap")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "remotemap_changed_files": [line[3:] for line in changed.splitlines()],
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("remotemap", "joblib", "cloudpickle", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    return found


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
    load_before = os.getloadavg()
    rows: list[Row] = []
    others: dict[str, float | None] = {}
    meter = CpuMeter()
    resets = 0
    benches = {"tiny": bench_tiny, "cpu": bench_cpu, "big": bench_big}
    with tempfile.TemporaryDirectory(prefix="remotemap-bench-config-") as config_home:
        isolate_environment(config_home)
        # mp.Pool forks: start it first, while this process is small and has no other threads.
        order = sorted(names, key=lambda n: n != "mp.Pool")
        runners = {name: Runner(name, N_JOBS) for name in order}
        try:
            if "mp.Pool" in runners:
                warm_up(runners["mp.Pool"])
            by_column = {name: runners[name] for name in names}
            for workload, bench in benches.items():
                if workload in args.workloads:
                    meter.start()
                    rows += bench(by_column, sizes, clock)
                    others[workload] = meter.others_share()
        finally:
            for runner in runners.values():
                resets += runner.foreign_executor_resets
                runner.close()
        if "cold" in args.workloads:
            meter.start()
            rows += bench_cold(names, sizes, clock)
            others["cold"] = meter.others_share()
        interpreter = interpreter_start_s()

    today = datetime.date.today().isoformat()
    info, source = machine(), source_state()
    dirty = " + uncommitted changes" if source["remotemap_changed_files"] else ""
    print(
        f"\nremotemap benchmarks, {today}, {info['usable_cpus']} CPUs, Python {info['python']}, "
        f"commit {source['commit']}{dirty}{' (--quick sizes)' if args.quick else ''}\n"
    )
    print(render_table(rows, names, judge=not args.quick))
    if args.quick:
        print("\n--quick: sizes too small for the targets, which are not judged.")
    print(
        "\nEvery figure: best of the repeats. Overhead/task = (elapsed - serial elapsed of the "
        "same tasks) / N; the serial column of row 1 is the task's own time.\n"
        f"* {sizes.tiny_process_tasks} tasks, scaled per task (row 1b: the same in ms). "
        "Ratio: how many times better the first contender is than the baseline.\n"
        f"Warm-up: {', '.join(sorted(REUSES_WORKERS & set(names)))} answer from every worker "
        "before timing. Rows 2-3: contenders take turns, one call a round.\n"
        "Serial column of row 3: summing in place, no transfer.\n"
        f"Interpreter start (python -c pass): {interpreter:.3f} s; load average before the run "
        f"{load_before[0]:.2f}; CPU share other processes took during "
        + ", ".join(f"{w} {_share(share)}" for w, share in others.items())
        + f"; total {clock.elapsed():.0f} s.",
        flush=True,
    )
    spreads = serial_spreads(rows)
    if spreads:
        print(
            "Slowest / fastest serial round (the same work each time; 1.00x = undisturbed): "
            + ", ".join(f"{key} {spread:.2f}x" for key, spread in spreads.items())
            + ".",
            flush=True,
        )
    busiest = max((share for share in others.values() if share is not None), default=0.0)
    if any(spread > DISTURBED_SPREAD for spread in spreads.values()):
        print(
            "WARNING: a serial round ran more than "
            f"{DISTURBED_SPREAD:.2f}x slower than another: something else slowed this machine "
            "(not always visible as a process: the host may throttle the VM). The best-of "
            "keeps the undisturbed rounds; rerun if every round was slow.",
            flush=True,
        )
    if busiest > BUSY_SHARE:
        print(
            f"WARNING: other processes took up to {busiest:.0%} of the CPUs during a workload: "
            "they slowed the contenders, the parallel ones most (row 2 understates speedups). "
            "Compare contenders within a run, or rerun on a quiet machine.",
            flush=True,
        )
    if resets:
        print(
            f"joblib found loky's executor left by remote_map(mode='local') {resets} time(s) "
            "and it was shut down first (joblib would fail with AttributeError otherwise).",
            flush=True,
        )
    if args.json:
        report = {
            "date": today,
            "quick": args.quick,
            "machine": info,
            "versions": versions(),
            "sizes": asdict(sizes),
            "n_jobs": N_JOBS,
            "statistic": "best of repeats (min elapsed); every repeat in times_s",
            "interpreter_start_s": interpreter,
            "loadavg_before": load_before,
            "others_cpu_share": others,
            "serial_spread": spreads,
            "source": source,
            "foreign_loky_executor_resets": resets,
            "total_s": clock.elapsed(),
            "rows": [
                {
                    "key": row.key,
                    "title": row.title,
                    "unit": row.unit,
                    "higher_is_better": row.higher_is_better,
                    "cells": {name: asdict(cell) for name, cell in row.cells.items()},
                    "ratio_of": list(row.ratio_of),
                    "ratio": row.ratio(),
                    "target": asdict(row.target) if row.target else None,
                    "met": row.met(),
                }
                for row in rows
            ],
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
