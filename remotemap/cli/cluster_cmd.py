"""``remotemap collect RUN`` and ``remotemap cancel RUN`` for cluster runs, and the "cluster
runs" part of ``remotemap status`` (jobs per state for every registered run)."""

from __future__ import annotations

import argparse
import datetime
import pickle
import sys
from typing import Any

from remotemap.errors import RemoteException


def _unknown_run(run: str, exc: Exception) -> str:
    """The error for a run the cluster registry does not know: when ``run`` is a run of
    another kind, say which, and what reads it."""
    from remotemap.run_index import load_run

    if not str(exc).startswith("no cluster run"):
        return str(exc)
    try:
        other = load_run(run)
    except Exception:  # no run of any kind: the registry's own words say where it looked
        return str(exc)
    if other.kind == "cluster":
        return str(exc)
    return (f"{run!r} is a {other.kind} run, not a cluster run: `remotemap runs results "
            f"{other.id}` prints its results, `remotemap runs show {other.id}` its state")


def cmd_collect(args: argparse.Namespace) -> int:
    from remotemap.backends.cluster.detached import collect
    from remotemap.backends.cluster.files import ClusterError

    failures: list[Any] = []
    try:
        results = collect(args.run, timeout=args.timeout, remove=args.remove)
    except RemoteException as exc:
        results, failures = exc.results, exc.failures
    except (ClusterError, TimeoutError) as exc:
        print(f"remotemap: error: {_unknown_run(args.run, exc)}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "wb") as f:
            pickle.dump(results, f)
        print(f"{len(results)} results written to {args.output}")
    else:
        for index, value in enumerate(results):
            print(f"{index}\t{value!r}")
    if failures:
        print(str(RemoteException(failures, results)), file=sys.stderr)
        return 1
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from remotemap.backends.cluster.detached import cancel
    from remotemap.backends.cluster.files import ClusterError

    try:
        counts = cancel(args.run, timeout=args.timeout)
    except ClusterError as exc:
        print(f"remotemap: error: {_unknown_run(args.run, exc)}", file=sys.stderr)
        return 1
    print(f"cancelled {args.run}: jobs {_counts(counts)}")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"


def cluster_block(ctx: Any) -> bool:
    """``remotemap status``: every registered cluster run and its jobs per state."""
    from remotemap.backends.cluster.detached import list_runs

    runs = list_runs()
    if not runs:
        ctx.line("cluster runs: none")
        return True
    ctx.line("cluster runs:")
    for run in runs:
        when = datetime.datetime.fromtimestamp(run.get("created") or 0).strftime("%Y-%m-%d %H:%M")
        how = "detached" if run.get("detached") else (
            "followed by its process" if run.get("submitter_alive") else "its process ended")
        ctx.line(f"  {run['run_id']}  {run['scheduler']} via {run['host']}, {when}, "
                 f"{run.get('function')}, {how}")
        if "error" in run:
            ctx.line(f"    cannot read it: {run['error']}")
            continue
        total = run.get("n_tasks")
        ctx.line(f"    tasks with an outcome: {run.get('outcomes')}"
                 + (f" of {total}" if total else "") + f"; jobs: {_counts(run['jobs'])}")
    return True


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from remotemap.cli import status_cmd

    if cluster_block not in status_cmd.REPORT_BLOCKS:
        status_cmd.REPORT_BLOCKS.append(cluster_block)
    collect = subparsers.add_parser(
        "collect", parents=[common], help="wait for a cluster run and print its results",
        description="Wait until every task of cluster run RUN is done (starting whatever its "
        "engine left undone), then print one line per task: INDEX<TAB>repr(result). Exit "
        "status 1 when tasks failed (their failures go to stderr), the run is unknown or the "
        "timeout passed.")
    collect.add_argument("run", metavar="RUN", help="run id (or a unique prefix of it)")
    collect.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                         help="give up after SECONDS (default: wait as long as it takes)")
    collect.add_argument("--remove", action="store_true",
                         help="delete the run directory and forget the run afterwards")
    collect.add_argument("--output", metavar="FILE",
                         help="pickle the list of results to FILE instead of printing them")
    collect.set_defaults(handler=cmd_collect)
    cancel = subparsers.add_parser(
        "cancel", parents=[common], help="cancel a cluster run's jobs",
        description="Cancel every job of cluster run RUN (running ones are killed, queued "
        "ones dropped) and wait until its engines stopped. What was computed can still be "
        "collected. Exit status 1 when the run is unknown or cannot be cancelled.")
    cancel.add_argument("run", metavar="RUN", help="run id (or a unique prefix of it)")
    cancel.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS",
                        help="seconds to wait for the jobs to stop (default 90)")
    cancel.set_defaults(handler=cmd_cancel)
