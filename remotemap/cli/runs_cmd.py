"""``remotemap runs``: every kept run, whatever its kind (``run_dir``, workflow, cluster), and
its subcommands ``show``, ``results``, ``clean``, ``retry`` (``runs_show``, ``runs_clean``).

Each module in :data:`RUNS_SUBCOMMANDS` adds its subcommands to ``remotemap runs`` with a
``register_runs(subparsers, common)`` function: a new subcommand is one line there. The older
top-level ``remotemap retry`` and ``remotemap clean`` are the same commands as ``runs retry``
and ``runs clean`` (``runs_clean.register``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from remotemap.errors import UnsafePath
from remotemap.state import state_dir

#: The modules adding subcommands to ``remotemap runs`` (each has ``register_runs``).
RUNS_SUBCOMMANDS: list[str] = [
    "remotemap.cli.runs_show",
    "remotemap.cli.runs_clean",
    "remotemap.cli.runs_plot",
    "remotemap.cli.runs_output",
]


def cmd_runs(args: argparse.Namespace) -> int:
    from remotemap.run_index import load_all

    try:
        runs = load_all()
    except UnsafePath as exc:
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    if not runs:
        print(f"no stored runs in {state_dir('runs')}, no workflow runs in "
              f"{state_dir('workflows')}, no cluster runs in {state_dir('cluster')}")
        return 0
    width = max(len("RUN"), *(len(run.id) for run in runs))
    print(f"{'RUN':<{width}} {'KIND':<8} {'MODE':<16} {'STATE':<11} {'OK':>6} {'FAILED':>6} "
          f"{'PENDING':>7} {'AGE':>5}  NAME")
    for run in runs:
        s = run.summary
        print(f"{s.id:<{width}} {s.kind:<8} {s.mode:<16} {s.state:<11} {s.ok:>6} {s.failed:>6} "
              f"{s.pending:>7} {s.age():>5}  {s.name}")
        if s.error:
            print(f"  cannot read it: {s.error}")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    runs = subparsers.add_parser(
        "runs", parents=[common],
        help="list every kept run (run_dir, workflow, cluster); show, results, clean, retry",
        description="Without a COMMAND: list every run remotemap keeps, of all three "
        "kinds: remote_map(..., "
        "run_dir=...) runs (kind run_dir), workflow runs (workflow) and cluster runs "
        "(cluster): id, kind, mode, state, tasks ok/failed/pending, age, function or "
        f"workflow name. They are indexed under {state_dir('runs').parent}. Exit status 1 "
        "when the index of run_dir runs is not safe to read.")
    runs.set_defaults(handler=cmd_runs)
    sub = runs.add_subparsers(title="commands", metavar="COMMAND")
    for name in RUNS_SUBCOMMANDS:
        importlib.import_module(name).register_runs(sub, common)
