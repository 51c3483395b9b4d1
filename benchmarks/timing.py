"""Timing the contenders' calls: every worker up before the clock starts, best-of repeats
(more of them when calls are cheap), contenders taking turns, and progress lines on stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.contenders import REUSES_WORKERS, Largs, Runner
from benchmarks.tasks import worker_pid

#: Workers every contender gets.
N_JOBS = 2
WARMUP: list[tuple[Any, ...]] = [(0.02,)] * (4 * N_JOBS)

#: Cheap calls are repeated beyond ``repeats`` while they have used less than this in all...
CHEAP_BUDGET_S = 1.0
#: ...up to this many calls: more samples for the best-of where they cost nothing.
CHEAP_MAX_REPEATS = 15


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
