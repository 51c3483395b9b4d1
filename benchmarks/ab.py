"""Before and after in one run: a probe timed alternately (A B A B ...) against two checkouts.

A shared machine's load changes by the minute; measuring the old code in one run and the new
in another compares the loads as much as the code. Here every round runs the probe once on
each side, each time in a fresh interpreter, the order flipped every other round, so the load
falls on both alike. The base checkout is an export of a git revision (``git archive``) in a
temporary directory: the probe imports ``remotemap`` from it (and its loky workers too).

    .venv/bin/python -m benchmarks.ab --base main tiny      # local overhead vs mp.Pool
    .venv/bin/python -m benchmarks.ab --base main ssh_cpu   # ssh: 8 x 0.5 s CPU (root)

Probes (``--probe NAME TREE``, run by the above in a fresh interpreter; JSON on the last line):

* ``tiny``: 10,000 tasks ``x + 1``, ``remote_map(mode="local")`` beside
  ``multiprocessing.Pool(2).starmap`` and a serial loop, taking turns; the median overhead per
  task (elapsed minus the serial loop's, over N) in microseconds, and local / mp.Pool.
* ``bulk`` and ``bulk_dumps``: 16 tasks each taking its own 50 MB float64 array and returning
  its sum, ``mode="local"`` (``bulk``) or ``"local_with_dumps"`` beside joblib (memmapping),
  taking turns; the median MB/s of each, their ratio, and the best call's MB/s (benchmarks.run's
  workload 3).
* ``ssh_cpu`` (:mod:`benchmarks.ab_ssh`): 8 tasks of 0.5 s CPU over ssh on the loopback host,
  2 workers; the overhead is the elapsed time minus the ideal (serial time / 2).
* ``cluster_start``: 3 trivial tasks ``mode="cluster"`` on the SLURM whose slurm.conf is in
  ``$SLURM_CONF`` (e.g. one kept up by ``tests.infra.slurm``): the call's seconds, when its
  engine started, its first outcome, and how long after the last outcome the call returned
  (:mod:`benchmarks.cluster_timeline` has the whole timeline).
* ``ssh_cpu_warm``: ``ssh_cpu`` once the host is warm (a call before, untimed).
* ``ssh_sleep_warm``: the same with tasks that sleep 0.5 s: the load of a shared machine
  stretches them less, so the overhead of a warm call shows through it.
* ``slurm_workers`` (:mod:`benchmarks.ab_slurm`): 1,000 trivial tasks and 100 x sleep(1) on
  the private SLURM (16 slots, root), remote_map's worker jobs beside dask-jobqueue's 2 x 8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.contenders import ROOT

TINY_TASKS = 10_000
TINY_ROUNDS = 15


def use_tree(tree: str) -> None:
    """Import ``remotemap`` from ``tree`` in this process and every process it starts."""
    sys.path.insert(0, tree)
    os.environ["PYTHONPATH"] = os.pathsep.join([tree, ROOT])
    import remotemap

    where = os.path.dirname(os.path.dirname(os.path.abspath(remotemap.__file__)))
    if os.path.realpath(where) != os.path.realpath(tree):
        raise RuntimeError(f"remotemap was imported from {where}, not from {tree}")


def probe_tiny(tree: str) -> dict[str, Any]:
    """Median overhead per task of local and of mp.Pool, in microseconds, taking turns."""
    import multiprocessing

    pool = multiprocessing.Pool(2)  # forked before any other thread exists here
    use_tree(tree)
    from benchmarks.tasks import add_one
    from remotemap import remote_map

    largs = [(i,) for i in range(TINY_TASKS)]
    expected = [i + 1 for i in range(TINY_TASKS)]
    calls = {
        "serial": lambda: [add_one(*a) for a in largs],
        "local": lambda: remote_map(add_one, largs, mode="local", progress=False, n_jobs=2),
        "mp.Pool": lambda: pool.starmap(add_one, largs),
    }
    for _ in range(3):  # workers up, caches warm
        calls["local"]()
        calls["mp.Pool"]()
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for _ in range(TINY_ROUNDS):
        for name in order:
            started = time.perf_counter()
            values = calls[name]()
            times[name].append(time.perf_counter() - started)
            if values != expected:
                raise AssertionError(f"{name} returned wrong values")
        order.reverse()
    pool.close()
    serial = statistics.median(times["serial"])
    over = {name: (statistics.median(times[name]) - serial) / TINY_TASKS * 1e6
            for name in ("local", "mp.Pool")}
    return {"local_us": over["local"], "mp_us": over["mp.Pool"],
            "ratio": over["local"] / over["mp.Pool"]}


BULK_TASKS = 16
BULK_MB = 50
BULK_ROUNDS = 6


def probe_bulk(tree: str, mode: Literal["local", "local_with_dumps"]) -> dict[str, Any]:
    """Median MB/s of 16 x 50 MB array arguments through ``mode`` and through joblib."""
    use_tree(tree)
    import numpy as np

    from benchmarks.contenders import Runner
    from benchmarks.tasks import array_sum
    from remotemap import remote_map  # not Runner's: older trees lack what it imports

    arrays = [np.random.default_rng(i).random(BULK_MB * 125_000) for i in range(BULK_TASKS)]
    largs = [(a,) for a in arrays]
    expected = [array_sum(a) for a in arrays]
    joblib = Runner("joblib")
    calls: dict[str, Callable[[], list[Any]]] = {
        mode: lambda: remote_map(array_sum, largs, mode=mode, progress=False, n_jobs=2),
        "joblib": lambda: joblib.map(array_sum, largs),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for k in range(BULK_ROUNDS + 1):  # the first round warms up (workers, imports), untimed
        for name in order:
            started = time.perf_counter()
            values = calls[name]()
            if k:
                times[name].append(time.perf_counter() - started)
            if values != expected:
                raise AssertionError(f"{name} returned wrong values")
        order.reverse()
    rate = {name: BULK_TASKS * BULK_MB / statistics.median(t) for name, t in times.items()}
    # The best call too: the least disturbed one, on a machine whose load changes by the second.
    best = BULK_TASKS * BULK_MB / min(times[mode])
    return {"mb_s": rate[mode], "best_mb_s": best, "joblib_mb_s": rate["joblib"],
            "ratio": rate[mode] / rate["joblib"]}


def export(revision: str, into: str) -> str:
    """The files of ``revision`` (of this checkout's repository) under ``into``."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", revision], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def run_probe(name: str, tree: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ab", "--probe", name, tree],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {name} on {tree} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def alternate(name: str, trees: dict[str, str], rounds: int) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` runs of the probe per side, A B then B A, and so on."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in trees}
    order = list(trees)
    for k in range(rounds):
        for side in order:
            load = os.getloadavg()[0]
            result = run_probe(name, trees[side])
            result["load"] = load
            runs[side].append(result)
            print(f"round {k + 1} {side:<6} " + ", ".join(
                f"{key} {value:.3f}" for key, value in result.items()), file=sys.stderr,
                flush=True)
        order.reverse()
    return runs


def summary(runs: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table: the median of every figure, per side."""
    keys = [key for key in runs[next(iter(runs))][0] if key != "load"]
    lines = ["| side | runs | " + " | ".join(f"median {key}" for key in keys) + " | load |",
             "|---|---|" + "---|" * (len(keys) + 1)]
    for side, results in runs.items():
        cells = [f"{statistics.median(r[key] for r in results):.3f}" for key in keys]
        loads = [r["load"] for r in results]
        lines.append(f"| {side} | {len(results)} | " + " | ".join(cells)
                     + f" | {min(loads):.1f}-{max(loads):.1f} |")
    # Paired: each round's two runs were back to back, under much the same load.
    before, after = runs.values()
    pairs = list(zip(after, before, strict=True))
    ratios = [f"{statistics.median(a[key] / b[key] for a, b in pairs):.3f}"
              if all(b[key] for _, b in pairs) else "-" for key in keys]
    lines.append("| after / before, median of the rounds' ratios | | " + " | ".join(ratios)
                 + " | |")
    return "\n".join(lines)


def probe_cluster_start(tree: str) -> dict[str, Any]:
    """The fixed cost of a small cluster call (see the module docstring)."""
    from benchmarks.cluster_timeline import probe as timeline

    # Not in ROOT: the engine (``python -m``, started in the caller's directory) would put
    # it first on its sys.path and import this checkout's remotemap.
    os.chdir(tempfile.gettempdir())
    steps = timeline(tree, 3, os.environ["SLURM_CONF"])
    return {"call_s": steps["caller returned"], "engine_s": steps["engine started"],
            "first_outcome_s": steps["first outcome"],
            "tail_s": steps["caller returned"] - steps["last outcome"]}


def probe(name: str, tree: str) -> dict[str, Any]:
    if name == "tiny":
        return probe_tiny(tree)
    if name in ("bulk", "bulk_dumps"):
        return probe_bulk(tree, "local" if name == "bulk" else "local_with_dumps")
    if name == "cluster_start":
        return probe_cluster_start(tree)
    if name in ("ssh_cpu", "ssh_cpu_warm", "ssh_sleep_warm"):
        from benchmarks.ab_ssh import probe_ssh_cpu

        return probe_ssh_cpu(tree, warm=name != "ssh_cpu", sleep=name == "ssh_sleep_warm")
    if name == "slurm_workers":
        from benchmarks.ab_slurm import probe_slurm_workers

        return probe_slurm_workers(tree)
    raise ValueError(f"unknown probe {name!r}; expected tiny, bulk, bulk_dumps, ssh_cpu, "
                     "ssh_cpu_warm, ssh_sleep_warm, cluster_start or slurm_workers")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("name", nargs="?", default="tiny",
                        help="tiny, bulk, bulk_dumps, ssh_cpu, ssh_cpu_warm, ssh_sleep_warm,"
                             " cluster_start or slurm_workers")
    parser.add_argument("--base", default="main", help="git revision of the before side")
    parser.add_argument("--rounds", type=int, default=5, help="runs per side (default 5)")
    parser.add_argument("--probe", nargs=2, metavar=("NAME", "TREE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(*args.probe)))
        return 0
    with tempfile.TemporaryDirectory(prefix="remotemap-ab-") as tmp:
        trees = {"before": export(args.base, tmp), "after": ROOT}
        runs = alternate(args.name, trees, args.rounds)
    print(f"{args.name}: before = {args.base}, after = this checkout, {args.rounds} fresh "
          "interpreters each, alternating")
    print(summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
