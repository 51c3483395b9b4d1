"""``remotemap runs show RUN`` and ``remotemap runs results RUN [-o FILE]``: one run of any
kind, read through :func:`remotemap.run_index.load_run` (nothing is waited for or started)."""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from typing import Any

from remotemap.errors import RemotemapError, TaskFailure, UnsafePath
from remotemap.run_index.model import LoadedRun, spans

#: Lines of a failed task's output shown by ``runs show``.
OUTPUT_LINES = 10
#: Failures ``runs show`` prints in full (the others are counted).
FAILURES_SHOWN = 20


def error(message: object) -> int:
    """Print ``remotemap: error: MESSAGE`` to stderr; exit status 1."""
    print(f"remotemap: error: {message}", file=sys.stderr)
    return 1


def _load(run: str) -> LoadedRun | None:
    """The run, or None with the error printed."""
    from remotemap.run_index import load_run

    try:
        return load_run(run)
    except (ValueError, UnsafePath, RemotemapError, OSError) as exc:
        error(exc)
        return None


def _failure_lines(failure: TaskFailure) -> list[str]:
    lines = [f"  [{failure.kind}] " + failure.summary().replace("\n", "\n  ")]
    # TaskFailure.output (what the task printed) is not in every version: read it softly.
    output = str(getattr(failure, "output", "") or "").rstrip("\n")
    if output:
        tail = output.splitlines()[-OUTPUT_LINES:]
        lines.append(f"    output (last {len(tail)} lines):")
        lines += [f"      {line}" for line in tail]
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    run = _load(args.run)
    if run is None:
        return 1
    s = run.summary
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created)) \
        if s.created is not None else "?"
    print(f"run {s.id}: {s.kind} run of {s.name or '?'} on mode {s.mode}")
    print(f"  state: {s.state}; {s.n_tasks} tasks: {s.ok} ok, {s.failed} failed, "
          f"{s.pending} pending; made {created} ({s.age()} ago)")
    print(f"  where: {s.location}")
    if s.error:
        print(f"  cannot read it: {s.error}")
    for line in run.details:
        print(f"  {line}")
    if run.pending:
        print(f"pending tasks: {spans(run.pending)}")
    if run.failures:
        print(f"failures ({len(run.failures)}):")
        for failure in run.failures[:FAILURES_SHOWN]:
            print("\n".join(_failure_lines(failure)))
        if len(run.failures) > FAILURES_SHOWN:
            rest = [f.index for f in run.failures[FAILURES_SHOWN:]]
            print(f"  ... and {len(rest)} more (tasks {spans(rest)})")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    run = _load(args.run)
    if run is None:
        return 1
    try:
        values = run.load_values()
    except (RemotemapError, ValueError, OSError) as exc:
        return error(exc)
    indices = run.indices if run.indices is not None else list(range(run.summary.n_tasks))
    failed = {f.index for f in run.failures}
    if args.output:
        with open(args.output, "wb") as f:
            pickle.dump([values.get(i) for i in indices], f)
        print(f"{len(indices)} results written to {args.output}")
    else:
        for index in indices:
            value = repr(values[index]) if index in values else \
                "<failed>" if index in failed else "<pending>"
            print(f"{index}\t{value}")
    missing = [i for i in indices if i not in values]
    if not missing:
        return 0
    pending = [i for i in missing if i not in failed]
    what = [f"{len(group)} {word} task{'s' if len(group) > 1 else ''} ({spans(group)})"
            for word, group in (("failed", sorted(failed)), ("pending", pending)) if group]
    return error(f"run {run.id}: no result for {' and '.join(what)}"
                 + (" (None in the file)" if args.output else "")
                 + f"; `remotemap runs show {run.id}` says why")


def register_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    show = sub.add_parser(
        "show", parents=[common], help="one run: its tasks, failures with their output, where",
        description="Show one run of any kind: state, tasks ok/failed/pending, where it "
        "lives, what its kind adds (workflow steps, cluster jobs), and each failure with the "
        f"end of its traceback and the last {OUTPUT_LINES} lines the task printed. Nothing "
        "is waited for. Exit status 1 when no run has that id.")
    show.add_argument("run", metavar="RUN", help="run id (or a unique prefix), or directory")
    show.set_defaults(handler=cmd_show)
    results = sub.add_parser(
        "results", parents=[common], help="print (or pickle) a run's results",
        description="Print one line per task of a run: INDEX<TAB>repr(value), <failed> or "
        "<pending>; or with -o pickle the list of values (None where a task has no result) "
        "to FILE. A workflow's values are its steps', by step id, kept only for a run given "
        "a run_dir. A cluster run is read as it is now: `remotemap collect` waits for it. "
        "Exit status 1 when some task has no result, or the run cannot be found or read.")
    results.add_argument("run", metavar="RUN", help="run id (or a unique prefix), or directory")
    results.add_argument("-o", "--output", metavar="FILE",
                         help="pickle the list of results to FILE instead of printing them")
    results.set_defaults(handler=cmd_results)
