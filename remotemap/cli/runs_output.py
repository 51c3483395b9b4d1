"""``remotemap runs output RUN [--task N]``: what the tasks of a stored run printed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from remotemap.errors import TamperedFile, UnsafePath
from remotemap.runs import RunStore


def cmd_output(args: argparse.Namespace) -> int:
    """What the tasks of a stored run printed: every task's, or ``--task N``'s alone."""
    try:
        store = RunStore.existing(RunStore.find(args.run))
        stored, meta = store.load(), store.meta()
    except (ValueError, UnsafePath, TamperedFile) as exc:
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    if args.task is not None:
        if not 0 <= args.task < int(meta["n_tasks"]):
            print(f"remotemap: error: run {meta['id']} has tasks 0 to {meta['n_tasks'] - 1}; "
                  f"there is no task {args.task}", file=sys.stderr)
            return 1
        if args.task not in stored.values and args.task not in stored.failures:
            print(f"remotemap: error: task {args.task} of run {meta['id']} has no stored "
                  "outcome (it never finished)", file=sys.stderr)
            return 1
        sys.stdout.write(stored.outputs.get(args.task, ""))
        if args.task not in stored.outputs:
            print(f"task {args.task} printed nothing", file=sys.stderr)
        return 0
    if not stored.outputs:
        print(f"no task of run {meta['id']} printed anything")
    for index in sorted(stored.outputs):
        state = "failed" if index in stored.failures else "ok"
        text = stored.outputs[index]
        print(f"=== task {index} ({state}) ===")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def register_runs(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``output`` to the subcommands of ``remotemap runs``."""
    output = subparsers.add_parser(
        "output", parents=[common], help="what the tasks of a stored run printed",
        description="Print what the tasks of a stored run printed (stdout and stderr as they "
        "wrote them, each task's first 10,000 and last 40,000 characters), from the attempt "
        "whose outcome is kept. Exit status 1 when the run or the task cannot be found.")
    output.add_argument("run", metavar="RUN", help="run id (see `remotemap runs`) or directory")
    output.add_argument("--task", type=int, metavar="N",
                        help="only task N's output, exactly as printed")
    output.set_defaults(handler=cmd_output)
