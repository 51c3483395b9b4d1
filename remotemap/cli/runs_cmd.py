"""``remotemap runs | retry RUN | clean``: the stored runs (``run_dir=`` / ``resume=``)."""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from remotemap.errors import TamperedFile, UnsafePath
from remotemap.locks import DirectoryLock, RunDirectoryBusy
from remotemap.runs import RunStore, list_runs
from remotemap.state import state_dir


def _counts(store: RunStore) -> tuple[int, int, int]:
    meta = store.meta()
    stored = store.load()
    ok, failed = len(stored.values), len(stored.failures)
    return ok, failed, int(meta["n_tasks"]) - ok - failed


def _safe_runs() -> list[RunStore] | None:
    """The stored runs, or None (with the error printed) when the index is not safe."""
    try:
        return list_runs()
    except UnsafePath as exc:
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return None


def cmd_runs(args: argparse.Namespace) -> int:
    stores = _safe_runs()
    if stores is None:
        return 1
    if not stores:
        print(f"no stored runs in {state_dir('runs')}")
        return 0
    print(f"{'RUN':<24} {'MODE':<17} {'CREATED':<20} {'STATE':<8} {'OK':>6} {'FAILED':>6} "
          f"{'PENDING':>7}  FUNCTION")
    for store in stores:
        meta = store.meta()
        ok, failed, pending = _counts(store)
        print(f"{meta['id']:<24} {meta['mode']:<17} {meta['created']:<20} {meta['state']:<8} "
              f"{ok:>6} {failed:>6} {pending:>7}  {meta['function']}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from remotemap.api import remote_map
    from remotemap.errors import RemoteException

    try:  # the function and tasks are unpickled only once their seal checks out
        store = RunStore.existing(RunStore.find(args.run))
        function, (largs, lkwargs) = store.function(), store.tasks()
    except (ValueError, UnsafePath, TamperedFile) as exc:
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    meta = store.meta()
    mode = args.mode or meta["mode"]
    ok, failed, pending = _counts(store)
    print(f"run {meta['id']}: {ok} ok, {failed} failed, {pending} never finished; "
          f"rerunning {failed + pending} on {mode}")
    try:
        remote_map(function, largs, lkwargs, mode=mode, config=args.config,
                   resume=store.root, function_changed=args.function_changed)
    except RemoteException as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (ValueError, RunDirectoryBusy) as exc:  # the function changed; the run is busy
        print(f"remotemap: error: {exc}", file=sys.stderr)
        return 1
    print(f"run {meta['id']}: all {meta['n_tasks']} tasks ok")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    cutoff = datetime.datetime.now() - datetime.timedelta(days=args.older_than)
    removed = 0
    stores = _safe_runs()
    if stores is None:
        return 1
    for store in stores:
        meta = store.meta()
        created = datetime.datetime.fromisoformat(meta["created"])
        if args.run and meta["id"] not in args.run:
            continue
        if not args.run and created > cutoff:
            continue
        lock = DirectoryLock(store.root, "the run directory")
        try:  # a run going on now is left alone; one killed half-way is not

            lock.acquire(label="remotemap clean")
        except RunDirectoryBusy as exc:
            print(f"kept {meta['id']}: {exc}")
            continue
        store.remove()
        lock.release()
        removed += 1
        print(f"removed {meta['id']} ({store.root})")
    print(f"{removed} run(s) removed")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    runs = subparsers.add_parser(
        "runs", parents=[common], help="list stored runs (mode, when, ok/failed/pending)",
        description="List the runs stored with remote_map(..., run_dir=...) and where they "
        f"are ({state_dir('runs')}). Exit status 1 when their index is not safe to read.")
    runs.set_defaults(handler=cmd_runs)
    _register_output(runs, common)
    retry = subparsers.add_parser(
        "retry", parents=[common], help="rerun the failed and unfinished tasks of a run",
        description="Rerun the tasks of a stored run that failed or never finished, with the "
        "function and arguments stored in it. Exit status 1 if some still fail, or the run "
        "cannot be found, read or locked.")
    retry.add_argument("run", metavar="RUN", help="run id (see `remotemap runs`) or directory")
    retry.add_argument("--mode", help="run them on this mode (default: the run's own)")
    retry.add_argument("--function-changed", choices=("error", "rerun", "keep"),
                       default="error",
                       help="when the stored function's code (e.g. its module) changed since "
                       "its results were stored: refuse (default), rerun every task, or keep "
                       "the stored results and rerun only failed and unfinished tasks")
    retry.set_defaults(handler=cmd_retry)
    clean = subparsers.add_parser(
        "clean", parents=[common], help="remove stored runs",
        description="Remove stored runs: the ones named, else every finished run older than "
        "--older-than days. A run going on now is kept. Exit status 1 when the index of runs "
        "is not safe to read.")
    clean.add_argument("run", metavar="RUN", nargs="*", help="run ids to remove")
    clean.add_argument("--older-than", type=float, default=7.0, metavar="DAYS",
                       help="age in days of the finished runs to remove (default 7; 0 = all)")
    clean.set_defaults(handler=cmd_clean)


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


def _register_output(runs: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    commands = runs.add_subparsers(title="run commands", metavar="COMMAND")
    output = commands.add_parser(
        "output", parents=[common], help="what the tasks of a stored run printed",
        description="Print what the tasks of a stored run printed (stdout and stderr as they "
        "wrote them, each task's first 10,000 and last 40,000 characters), from the attempt "
        "whose outcome is kept. Exit status 1 when the run or the task cannot be found.")
    output.add_argument("run", metavar="RUN", help="run id (see `remotemap runs`) or directory")
    output.add_argument("--task", type=int, metavar="N",
                        help="only task N's output, exactly as printed")
    output.set_defaults(handler=cmd_output)
