"""The four workloads (tiny tasks, CPU-bound tasks, large array arguments, cold start), their
sizes, and the rows of figures each one yields.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.contenders import ROOT, Runner
from benchmarks.tasks import add_one, array_sum, spin
from benchmarks.timing import CHEAP_BUDGET_S, N_JOBS, Clock, interleaved_runs, timed_runs

WORKLOADS = ("tiny", "cpu", "big", "cold")
#: Contenders that start an OS process per task: too slow for 10,000 tiny tasks.
PROCESS_PER_TASK = ("local_with_dumps", "subprocess")


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
        return f"{self.contender} {sign} {fmt(self.limit)} {unit}"


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


def bench_tiny(runners: dict[str, Runner], sizes: Sizes, clock: Clock) -> list[Row]:
    """Workload 1: overhead per trivial task, in microseconds (and ms for one process a task)."""
    overhead = _tiny_overheads(runners, sizes, clock)
    n_big = sizes.tiny_tasks
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


def _tiny_overheads(runners: dict[str, Runner], sizes: Sizes, clock: Clock) -> dict[str, Cell]:
    """Each contender's overhead per ``x + 1`` task in microseconds (the serial cell: the
    task's own time), over fewer tasks for the contenders that start a process per task."""
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
    return overhead


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


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
