"""Helpers of :mod:`benchmarks.peers_slurm` that need no cluster: the load sampler, the
``--cluster-option`` parser, the ideal time and the Markdown table."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from benchmarks.sacct import Submissions


class Row(Protocol):
    """What :func:`render` reads of a row's outcome (``peers_slurm.Outcome``)."""

    peer: str
    workload: str
    n: int
    seconds: list[float]
    failures: list[str]
    submissions: list[Submissions]
    loads: list[tuple[float, float, float]]


class LoadSampler:
    """The 1-minute load average at start, its highest value while running, and at
    :meth:`stop` (sampled every ``interval`` s by a thread: a row lasts seconds to minutes)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.start = os.getloadavg()[0]
        self._high = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True,
                                        name="load-sampler")
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._high = max(self._high, os.getloadavg()[0])

    def stop(self) -> tuple[float, float, float]:
        """``(start, highest, end)``."""
        self._stop.set()
        self._thread.join()
        end = os.getloadavg()[0]
        return self.start, max(self._high, end), end


def cluster_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, value)``, VALUE read as ``remotemap config set`` reads it (TOML:
    ``2``, ``true``, ``"x"``; else text); KEY must be a ``[cluster]`` config key, so a typo
    fails before SLURM starts (argparse ``type=``)."""
    from remotemap.config import lookup_key
    from remotemap.config.editing import parse_cli_value

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. tasks_per_job=50")
    try:
        lookup_key(f"cluster.{key}")
    except Exception as exc:  # ConfigError, with remotemap's did-you-mean
        raise argparse.ArgumentTypeError(str(exc)) from None
    value = parse_cli_value(raw.strip())
    # A tomlkit item (kept for writing back as typed): the plain Python value is wanted here.
    return key, value.unwrap() if hasattr(value, "unwrap") else value


def ideal_seconds(n: int, task_s: float, slots: int) -> float | None:
    """The time ``n`` tasks of ``task_s`` seconds take on ``slots`` slots with no overhead (None
    for trivial tasks: the ideal is then all overhead, no figure to compare)."""
    if task_s <= 0:
        return None
    return math.ceil(n / slots) * task_s


def _seconds(row: Row) -> str:
    if not row.seconds:
        return "-"
    median = statistics.median(row.seconds)
    if len(row.seconds) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} ({min(row.seconds):.2f}-{max(row.seconds):.2f})"


def _submissions(row: Row) -> str:
    # Distinct descriptions across repeats, in order: usually one.
    return " / ".join(dict.fromkeys(s.describe() for s in row.submissions)) or "-"


def _load(row: Row) -> str:
    if not row.loads:
        return "-"
    start = min(load[0] for load in row.loads)
    high = max(load[1] for load in row.loads)
    end = max(load[2] for load in row.loads)
    return f"{start:.2f} / {high:.2f} / {end:.2f}"


def render(rows: Sequence[Row], ideal: dict[str, float | None], slots: int,
           repeats: int) -> list[str]:
    """Markdown lines: one table, a row per peer and workload; ``x BASE`` is the row's median
    over that of the first peer (remote_map, when it runs) on the same workload."""
    stat = "median (min-max)" if repeats > 1 else "one run"
    base_peer = rows[0].peer if rows else "-"
    base = {row.workload: statistics.median(row.seconds) for row in rows
            if row.peer == base_peer and row.seconds}
    lines = [f"### SLURM peers, {slots} slots, end to end ({stat} of {repeats})", "",
             f"| workload | peer | seconds | x {base_peer} | ideal (s) | submissions (sacct) | "
             "load start / max / end | failures |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "-"
        if row.seconds and row.workload in base:
            ratio = f"{statistics.median(row.seconds) / base[row.workload]:.2f}"
        best = ideal.get(row.workload)
        failures = "; ".join(row.failures).replace("|", "/") or "-"
        lines.append(
            f"| {row.n} x {row.workload} | {row.peer} | {_seconds(row)} | {ratio} | "
            f"{'-' if best is None else f'{best:g}'} | {_submissions(row)} | {_load(row)} | "
            f"{failures} |")
    return [*lines, "", "Load: the 1-minute load average at the row's start, its highest "
            "sample during the row and at its end. The row's own jobs count in it, and a start "
            "still carries the previous rows' load: compare rows of one run.", ""]
