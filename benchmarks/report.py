"""What the benchmark prints and writes: the table with its targets, the notes and warnings
under it, the machine and versions measured, and the JSON file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.contenders import REUSES_WORKERS, ROOT
from benchmarks.timing import N_JOBS, Clock
from benchmarks.workloads import PROCESS_PER_TASK, Row, Sizes, fmt

#: Other processes using more than this share of the CPUs during a workload: a warning.
BUSY_SHARE = 0.10
#: Serial rounds of an interleaved workload differing by more than this: a warning.
DISTURBED_SPREAD = 1.15
#: Rows whose contenders take turns, the serial loop included (one call of each per round).
INTERLEAVED_ROWS = ("cpu_speedup", "big_mb_per_s")


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
                cells.append(fmt(cell.value) + mark)
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


@dataclass
class Measurement:
    """What one benchmark run measured, and the conditions it measured it in."""

    sizes: Sizes
    quick: bool
    names: list[str]
    rows: list[Row]
    #: Per workload: the CPU share other programs took (None: the meter could not tell).
    others: dict[str, float | None]
    #: How often joblib found loky's executor left by remote_map and shut it down first.
    resets: int
    interpreter_s: float
    load_before: tuple[float, float, float]


def print_report(found: Measurement, clock: Clock, today: str, info: dict[str, Any],
                 source: dict[str, Any]) -> None:
    """The heading, the table and the notes under it, then any warning about disturbance."""
    dirty = " + uncommitted changes" if source["remotemap_changed_files"] else ""
    print(
        f"\nremotemap benchmarks, {today}, {info['usable_cpus']} CPUs, Python {info['python']}, "
        f"commit {source['commit']}{dirty}{' (--quick sizes)' if found.quick else ''}\n"
    )
    print(render_table(found.rows, found.names, judge=not found.quick))
    if found.quick:
        print("\n--quick: sizes too small for the targets, which are not judged.")
    print(
        "\nEvery figure: best of the repeats. Overhead/task = (elapsed - serial elapsed of the "
        "same tasks) / N; the serial column of row 1 is the task's own time.\n"
        f"* {found.sizes.tiny_process_tasks} tasks, scaled per task (row 1b: the same in ms). "
        "Ratio: how many times better the first contender is than the baseline.\n"
        f"Warm-up: {', '.join(sorted(REUSES_WORKERS & set(found.names)))} answer from every "
        "worker before timing. Rows 2-3: contenders take turns, one call a round.\n"
        "Serial column of row 3: summing in place, no transfer.\n"
        f"Interpreter start (python -c pass): {found.interpreter_s:.3f} s; load average before "
        f"the run {found.load_before[0]:.2f}; CPU share other processes took during "
        + ", ".join(f"{w} {_share(share)}" for w, share in found.others.items())
        + f"; total {clock.elapsed():.0f} s.",
        flush=True,
    )
    _print_warnings(found)


def _print_warnings(found: Measurement) -> None:
    spreads = serial_spreads(found.rows)
    if spreads:
        print(
            "Slowest / fastest serial round (the same work each time; 1.00x = undisturbed): "
            + ", ".join(f"{key} {spread:.2f}x" for key, spread in spreads.items())
            + ".",
            flush=True,
        )
    busiest = max((share for share in found.others.values() if share is not None), default=0.0)
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
    if found.resets:
        print(
            f"joblib found loky's executor left by remote_map(mode='local') {found.resets} "
            "time(s) and it was shut down first (joblib would fail with AttributeError "
            "otherwise).",
            flush=True,
        )


def write_json(path: str, found: Measurement, clock: Clock, today: str, info: dict[str, Any],
               source: dict[str, Any]) -> None:
    """Every figure and every repeat, with the conditions of the run, to ``path``."""
    report = {
        "date": today,
        "quick": found.quick,
        "machine": info,
        "versions": versions(),
        "sizes": asdict(found.sizes),
        "n_jobs": N_JOBS,
        "statistic": "best of repeats (min elapsed); every repeat in times_s",
        "interpreter_start_s": found.interpreter_s,
        "loadavg_before": found.load_before,
        "others_cpu_share": found.others,
        "serial_spread": serial_spreads(found.rows),
        "source": source,
        "foreign_loky_executor_resets": found.resets,
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
            for row in found.rows
        ],
    }
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"figures written to {path}")
