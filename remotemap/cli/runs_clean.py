"""``remotemap runs clean`` and ``remotemap runs retry`` (also top level, as ``remotemap
clean`` and ``remotemap retry`` were before ``runs`` had subcommands)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from remotemap.errors import RemotemapError, TamperedFile, UnsafePath
from remotemap.locks import RunDirectoryBusy
from remotemap.run_index.model import RUNNING, LoadedRun
from remotemap.state import state_dir


def error(message: object) -> int:
    """Print ``remotemap: error: MESSAGE`` to stderr; exit status 1."""
    print(f"remotemap: error: {message}", file=sys.stderr)
    return 1


def _why_kept(run: LoadedRun) -> str:
    s = run.summary
    counts = f"{s.ok} ok, {s.failed} failed, {s.pending} pending"
    if s.state == RUNNING:
        stop = f"`remotemap cancel {s.id}` stops it" if s.kind == "cluster" else \
            "wait for it to end"
        return f"it is running now ({counts}); {stop}"
    return f"it is {s.state} ({counts}); --force removes it"


def _clean_one(run: LoadedRun, force: bool) -> bool:
    """Remove ``run`` unless it is unfinished or failed (without ``force``) or running."""
    from remotemap.run_index import remove_run

    if run.summary.state == RUNNING or (not run.summary.finished_well and not force):
        print(f"kept {run.id} ({run.kind}): {_why_kept(run)}")
        return False
    try:
        done = remove_run(run)
    except (RunDirectoryBusy, RemotemapError, OSError) as exc:
        print(f"kept {run.id} ({run.kind}): {exc}")
        return False
    print(f"removed {run.id} ({run.kind}): {done}")
    return True


def _named(names: list[str]) -> list[LoadedRun] | None:
    from remotemap.run_index import load_run

    runs = []
    for name in names:
        try:
            runs.append(load_run(name))
        except (ValueError, UnsafePath, RemotemapError, OSError) as exc:
            error(exc)
            return None
    return runs


def cmd_clean(args: argparse.Namespace) -> int:
    from remotemap.run_index import load_all

    if args.run:
        runs = _named(args.run)
        if runs is None:
            return 1
    else:
        try:
            runs = load_all()
        except UnsafePath as exc:
            return error(exc)
        cutoff = time.time() - args.older_than * 86400
        runs = [r for r in runs if r.summary.created is not None and r.summary.created <= cutoff]
    removed = sum(_clean_one(run, args.force) for run in runs)
    print(f"{removed} run(s) removed")
    if args.run and removed < len(runs):  # a run named and not removed: say so by the status
        return 1
    return 0


def _not_retryable(run: str) -> str | None:
    """Why run ``run`` of another kind than run_dir cannot be retried; None when no run of
    another kind has that id."""
    from remotemap.run_index import load_run

    try:
        other = load_run(run)
    except (ValueError, UnsafePath, RemotemapError, OSError):
        return None
    if other.kind == "run_dir":
        return None
    if other.kind == "workflow":
        where = other.summary.location
        if where == str(state_dir("workflows") / other.id):  # no run_dir: a report only
            return (f"workflow run {other.id} was run without run_dir=, so nothing of it can "
                    "be resumed: run the workflow again (with a run_dir, to make it "
                    "resumable)")
        return (f"workflow run {other.id} cannot be retried from here: its steps' functions "
                f"are not stored. Run the workflow again with run_dir={where!r} (it runs only "
                "the steps that did not finish)")
    return (f"cluster run {other.id} cannot be retried: `remotemap collect {other.id}` "
            "finishes what its jobs left (a task whose job never reached it runs once more); "
            "failed tasks are rerun by a new call, e.g. remote_map(..., run_dir=...)")


def cmd_retry(args: argparse.Namespace) -> int:
    from remotemap.api import remote_map
    from remotemap.errors import RemoteException
    from remotemap.runs import RunStore

    try:  # the function and tasks are unpickled only once their seal checks out
        store = RunStore.existing(RunStore.find(args.run))
        function, (largs, lkwargs) = store.function(), store.tasks()
    except (ValueError, UnsafePath, TamperedFile) as exc:
        unknown = isinstance(exc, ValueError) and str(exc).startswith("no stored run")
        return error((unknown and _not_retryable(args.run)) or exc)
    meta = store.meta()
    mode = args.mode or meta["mode"]
    stored = store.load()
    ok, failed = len(stored.values), len(stored.failures)
    print(f"run {meta['id']}: {ok} ok, {failed} failed, {int(meta['n_tasks']) - ok - failed} "
          f"never finished; rerunning {int(meta['n_tasks']) - ok} on {mode}")
    try:
        remote_map(function, largs, lkwargs, mode=mode, config=args.config,
                   resume=store.root, function_changed=args.function_changed)
    except RemoteException as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (ValueError, RunDirectoryBusy) as exc:  # the function changed; the run is busy
        return error(exc)
    print(f"run {meta['id']}: all {meta['n_tasks']} tasks ok")
    return 0


def _clean_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", nargs="*",
                        help="ids (or directories) of the runs to remove, of any kind")
    parser.add_argument("--older-than", type=float, default=7.0, metavar="DAYS",
                        help="without RUN: remove the runs made more than DAYS days ago "
                        "(default 7; 0 = all)")
    parser.add_argument("--force", action="store_true",
                        help="remove failed and unfinished runs too (a running one never)")
    parser.set_defaults(handler=cmd_clean)


def _retry_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run id (see `remotemap runs`) or directory")
    parser.add_argument("--mode", help="run them on this mode (default: the run's own)")
    parser.add_argument("--function-changed", choices=("error", "rerun", "keep"),
                        default="error",
                        help="when the stored function's code (e.g. its module) changed since "
                        "its results were stored: refuse (default), rerun every task, or keep "
                        "the stored results and rerun only failed and unfinished tasks")
    parser.set_defaults(handler=cmd_retry)


CLEAN_HELP = "remove kept runs of any kind (failed or unfinished ones only with --force)"
CLEAN_DESCRIPTION = (
    "Remove kept runs of any kind (run_dir, workflow, cluster: the directory, its key and its "
    "index entry): the ones named, else every run made more than --older-than days ago. A run "
    "that failed or did not finish is kept unless --force; a run going on now is always kept "
    "(a cluster run: `remotemap cancel` it first). Exit status 1 when a run named is unknown "
    "or was kept, or the index of run_dir runs is not safe to read.")
RETRY_HELP = "rerun the failed and unfinished tasks of a run_dir run"
RETRY_DESCRIPTION = (
    "Rerun the tasks of a remote_map(..., run_dir=...) run that failed or never finished, "
    "with the function and arguments stored in it. Workflow and cluster runs store no "
    "function to rerun: the error says what does it for them. Exit status 1 if some still "
    "fail, or the run cannot be found, read or locked.")


def register_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    _clean_parser(sub.add_parser("clean", parents=[common], help=CLEAN_HELP,
                                 description=CLEAN_DESCRIPTION))
    _retry_parser(sub.add_parser("retry", parents=[common], help=RETRY_HELP,
                                 description=RETRY_DESCRIPTION))


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """``remotemap retry`` and ``remotemap clean``: ``runs retry`` and ``runs clean``."""
    _retry_parser(subparsers.add_parser("retry", parents=[common],
                                        help=f"{RETRY_HELP} (= runs retry)",
                                        description=RETRY_DESCRIPTION))
    _clean_parser(subparsers.add_parser("clean", parents=[common],
                                        help=f"{CLEAN_HELP} (= runs clean)",
                                        description=CLEAN_DESCRIPTION))
