"""Where the time of one ``remote_map(mode="cluster")`` call goes, from the call to its return
(issue 15: the fixed cost of a SLURM call, before the first ``sbatch`` and after the last job)::

    .venv/bin/python -m benchmarks.cluster_timeline [--tasks 3,1000] [--slurm-conf PATH]
    .venv/bin/python -m benchmarks.cluster_timeline --base main --rounds 3   # before / after

Each call keeps its run directory (``keep_files``) and the timeline is read from it afterwards:
the round's spec written by the caller and the engine's lock taken (file mtimes), the engine's
own steps (the round status's ``times``, written by engines that have them), SLURM's
Submit/Start/End of every job (``sacct``: whole seconds, so up to 1 s early), the first and
the last outcome file (mtimes), and the caller's return. Times are seconds after the call.

Without ``--slurm-conf`` a private single-node SLURM (16 slots, needs root) is started, as in
:mod:`benchmarks.peers_slurm`. ``--base REV`` runs the calls alternately with the code of
``REV`` (exported, as :mod:`benchmarks.ab` does) and this checkout, each call in a fresh
interpreter, and prints the medians and the median after/before ratio of each step.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.contenders import ROOT

#: Steps of the timeline, in the order of a call.
STEPS = ("spec written", "engine started", "soma-workflow ready", "first sbatch",
         "last sbatch", "first sbatch (sacct)", "first job start (sacct)", "first outcome",
         "last outcome", "last job end (sacct)", "engine saw outcomes", "engine saw end",
         "caller returned")


def _sacct_rows(run_id: str, env: dict[str, str]) -> list[tuple[float, float, float]]:
    """(Submit, Start, End) of every job of the run, as epoch seconds (whole seconds); asked
    again for up to 10 s while accounting has not heard of every end (it lags the call)."""
    deadline = time.monotonic() + 10.0
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1hours", "-o",
                              "JobName,Submit,Start,End"], env=env, capture_output=True,
                             text=True, check=False, timeout=60).stdout
        lines = [line.split("|") for line in out.splitlines() if run_id in line]
        if (lines and all(s[:1].isdigit() for _, *stamps in lines for s in stamps)) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rows = []
    for _, *stamps in lines:
        if len(stamps) == 3 and all(s[:1].isdigit() for s in stamps):
            submit, start, end = (time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))
                                  for s in stamps)
            rows.append((submit, start, end))
    return rows


def read_timeline(run: str, started: float, returned: float,
                  env: dict[str, str]) -> dict[str, float]:
    """The steps of one kept run, in seconds after ``started`` (missing ones left out)."""
    def mtime(rel: str) -> float | None:
        try:
            return os.stat(os.path.join(run, rel)).st_mtime
        except FileNotFoundError:
            return None

    with open(os.path.join(run, "rounds", "0.status.json")) as f:
        status = json.load(f)
    times = status.get("times") or {}
    outcomes = sorted(os.stat(p).st_mtime for p in glob.glob(os.path.join(run, "outcomes",
                                                                         "*.pkl")))
    sacct = _sacct_rows(os.path.basename(run), env)
    found = {  # sacct's times are whole seconds; the engine's only where it writes them
        "spec written": mtime("rounds/0.json"),
        "engine started": mtime("rounds/0.lock"),
        "soma-workflow ready": times.get("controller"),
        "first sbatch": times.get("first_sbatch"),
        "last sbatch": times.get("last_sbatch"),
        "first sbatch (sacct)": min((r[0] for r in sacct), default=None),
        "first job start (sacct)": min((r[1] for r in sacct), default=None),
        "first outcome": outcomes[0] if outcomes else None,
        "last outcome": outcomes[-1] if outcomes else None,
        "last job end (sacct)": max((r[2] for r in sacct), default=None),
        "engine saw outcomes": times.get("outcomes"),
        "engine saw end": times.get("done"),
        "caller returned": returned,
    }
    return {step: value - started for step, value in found.items() if value is not None}


@contextmanager
def slurm_conf(given: str | None) -> Iterator[str]:
    """``given``, or the slurm.conf of a private SLURM started for the run."""
    if given:
        yield given
        return
    from tests.infra.slurm import SingleNodeSlurm

    with SingleNodeSlurm(cpus=16) as cluster:
        subprocess.run(["sbatch", "--wait", "-o", "/dev/null", "--wrap", "true"],
                       env=cluster.env(), check=True, capture_output=True, timeout=120)
        yield str(cluster.conf_path)


def one_call(n_tasks: int, conf: str) -> dict[str, float]:
    """One call of ``n_tasks`` trivial tasks, in this process; its timeline."""
    # A task function in a module both sides have (the jobs import it by name).
    from benchmarks.tasks import add_one
    from remotemap import remote_map

    env = {**os.environ, "SLURM_CONF": conf}
    with tempfile.TemporaryDirectory(prefix="timeline-") as tmp:
        os.environ["XDG_STATE_HOME"] = os.path.join(tmp, "state")
        started = time.time()
        values = remote_map(add_one, [(i,) for i in range(n_tasks)], mode="cluster",
                            scheduler="slurm", slurm_conf=conf, shared_dir=tmp,
                            poll_interval=1.0, progress=False, keep_files=True)
        returned = time.time()
        if values != [i + 1 for i in range(n_tasks)]:
            raise AssertionError("wrong results")
        run = next(p for p in glob.glob(os.path.join(tmp, "2*")) if os.path.isdir(p))
        return read_timeline(run, started, returned, env)


def probe(tree: str, n_tasks: int, conf: str) -> dict[str, float]:
    """:func:`one_call` with ``remotemap`` imported from ``tree`` (a fresh interpreter)."""
    from benchmarks.ab import use_tree

    use_tree(tree)
    import soma_workflow.client  # noqa: F401 - the caller's import, not the call's time

    return one_call(n_tasks, conf)


def run_probe(tree: str, n_tasks: int, conf: str) -> dict[str, float]:
    # Not from ROOT: ``-m`` puts the working directory first on sys.path, and the engine
    # (``python -m ...``, started in the caller's directory) would import this checkout.
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cluster_timeline", "--probe",
                           tree, str(n_tasks), conf], cwd=tempfile.gettempdir(),
                          env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                          text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"timeline probe on {tree} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def table(runs: dict[str, list[dict[str, float]]], title: str) -> str:
    """Markdown: the median of each step per side and, with two sides, the median ratio."""
    sides = list(runs)
    lines = [f"**{title}** (seconds after the call; median of {len(runs[sides[0]])})", "",
             "| step | " + " | ".join(sides) + (" | after / before |" if len(sides) == 2
                                                else " |"),
             "|---|" + "---|" * (len(sides) + (len(sides) == 2))]
    for step in STEPS:
        cells = []
        for side in sides:
            values = [r[step] for r in runs[side] if step in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        if len(sides) == 2:
            pairs = [(a[step], b[step]) for b, a in zip(*runs.values(), strict=True)
                     if step in a and step in b and b[step] > 0]
            cells.append(f"{statistics.median(a / b for a, b in pairs):.2f}" if pairs else "-")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_timeline",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="3,1000", help="task counts (default 3,1000)")
    parser.add_argument("--slurm-conf", help="a running SLURM's slurm.conf (else one is started)")
    parser.add_argument("--base", help="git revision to compare with, alternately")
    parser.add_argument("--rounds", type=int, default=1, help="calls per side and size")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        tree, n, conf = args.probe
        print(json.dumps(probe(tree, int(n), conf)))
        return 0
    from benchmarks.ab import export

    with slurm_conf(args.slurm_conf) as conf, \
            tempfile.TemporaryDirectory(prefix="remotemap-ab-") as tmp:
        trees = {"before": export(args.base, tmp)} if args.base else {}
        trees["after" if args.base else "this checkout"] = ROOT
        for n in [int(t) for t in args.tasks.split(",")]:
            runs: dict[str, list[dict[str, float]]] = {side: [] for side in trees}
            order = list(trees)
            for k in range(args.rounds):
                for side in order:
                    runs[side].append(run_probe(trees[side], n, conf))
                    print(f"{n} tasks, round {k + 1}, {side}: "
                          f"{runs[side][-1]['caller returned']:.2f} s", file=sys.stderr,
                          flush=True)
                order.reverse()
            print(table(runs, f"{n} trivial tasks, mode='cluster', SLURM (16 slots)") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
