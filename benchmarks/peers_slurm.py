"""The SLURM rows of :mod:`benchmarks.peers`: ``remote_map(mode="cluster")`` beside
dask-jobqueue's ``SLURMCluster`` and submitit's ``map_array``, on the tests' private
single-node SLURM (16 slots on this 2-CPU machine; needs root)::

    .venv/bin/python -m benchmarks.peers_slurm [--quick] [--repeats 3]
        [--cluster-option dispatch=workers] [--slurm-peers remote_map,dask-jobqueue,submitit]

Two workloads (issue 15): 1,000 trivial tasks ``x + 1``, and 100 tasks of ``time.sleep(1)``
(ideal with 16 slots: ceil(100 / 16) = 7 s plus one job start). Every figure is end to end as
a user sees it: submitting, starting the workers (dask's two worker jobs), running, every
result in hand, the cluster or jobs stopped. The modules of every peer are imported and one
trivial job is run through SLURM before the first row, so no row pays for either.

Beside each figure: the ``sbatch`` submissions the row made, counted from ``sacct``
(:mod:`benchmarks.sacct`; a job array is one submission of N array tasks), and the load
average at the start, its highest value sampled during the row, and at the end. The load counts
the row's own jobs too, and a row's start still carries the previous rows' load.

dask-jobqueue runs 2 worker jobs of 8 threads each (``cores=8, processes=1``), as in the
issue's table; submitit one array task per task, stopped (``scancel``) after
``--submitit-limit`` seconds. ``--cluster-option KEY=VALUE`` (repeatable) adds a row of
``remote_map`` with those ``[cluster]`` options beside the plain one, e.g. another dispatch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):  # run as a file: find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import sacct
from benchmarks.contenders import isolate_environment
from benchmarks.slurm_rows import LoadSampler, cluster_option, ideal_seconds, render
from benchmarks.timing import Clock

PEER_NAMES = ("remote_map", "dask-jobqueue", "submitit")
#: Tasks per workload: the issue's sizes, and a run that fits in a few minutes.
FULL = {"trivial": 1000, "sleep": 100}
QUICK = {"trivial": 100, "sleep": 32}
SLEEP_S = 1.0
SLOTS = 16
#: dask-jobqueue: worker jobs x threads each (the issue's table).
JOBQUEUE_JOBS, JOBQUEUE_THREADS = 2, 8


def add_one(x: int) -> int:
    return x + 1


def sleep_add_one(x: int) -> int:
    time.sleep(SLEEP_S)
    return x + 1


TASKS: dict[str, Callable[[int], int]] = {"trivial": add_one, "sleep": sleep_add_one}


@dataclass
class Outcome:
    """One peer on one workload: every repeat's seconds (or why it failed), submissions, load."""

    peer: str
    workload: str
    n: int
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    submissions: list[sacct.Submissions] = field(default_factory=list)
    loads: list[tuple[float, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Setup:
    """What every peer needs from the cluster, and the run's choices."""

    env: dict[str, str]
    conf: str
    partition: str
    shared: str
    submitit_limit: float


# -- the peers ---------------------------------------------------------------------------------


def run_remotemap(setup: Setup, func: Callable[[int], int], xs: list[int],
                  options: dict[str, Any]) -> list[Any]:
    from remotemap import remote_map

    shared = tempfile.mkdtemp(prefix="remotemap-", dir=setup.shared)
    return remote_map(func, [(x,) for x in xs], mode="cluster", scheduler="slurm",
                      slurm_conf=setup.conf, shared_dir=shared, poll_interval=1.0,
                      progress=False, **options)


def run_jobqueue(setup: Setup, func: Callable[[int], int], xs: list[int]) -> list[Any]:
    from dask.distributed import Client

    # Through importlib: an optional (bench) package, typed or absent.
    cluster_class = importlib.import_module("dask_jobqueue").SLURMCluster
    # interface="lo": scheduler and workers listen on loopback only.
    with cluster_class(cores=JOBQUEUE_THREADS, processes=1, memory="2GB",
                       queue=setup.partition, walltime="00:10:00", python=sys.executable,
                       interface="lo", log_directory=setup.shared,
                       scheduler_options={"dashboard_address": None}) as cluster, \
            Client(cluster) as client:
        cluster.scale(jobs=JOBQUEUE_JOBS)
        return list(client.gather(client.map(func, xs, pure=False)))


def run_submitit(setup: Setup, func: Callable[[int], int], xs: list[int]) -> list[Any]:
    """``map_array``, one array task per task; cancelled past ``setup.submitit_limit`` s."""
    submitit = importlib.import_module("submitit")
    folder = tempfile.mkdtemp(prefix="submitit-", dir=setup.shared)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition=setup.partition, timeout_min=10,
                               cpus_per_task=1, slurm_array_parallelism=len(xs))
    jobs = executor.map_array(func, xs)
    deadline = time.monotonic() + setup.submitit_limit
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            array_id = str(jobs[0].job_id).partition("_")[0]
            subprocess.run(["scancel", array_id], env=setup.env, check=False, timeout=30)
            finished = sum(job.done() for job in jobs)
            raise TimeoutError(f"{finished}/{len(xs)} array tasks done after "
                               f"{setup.submitit_limit:g} s (--submitit-limit); array "
                               f"{array_id} cancelled")
        time.sleep(0.5)
    return [job.result() for job in jobs]


def peer_calls(names: Sequence[str], options: dict[str, Any],
               ) -> dict[str, Callable[[Setup, Callable[[int], int], list[int]], list[Any]]]:
    """Row name -> call, in the order asked; the options row right after the plain one."""
    calls: dict[str, Callable[[Setup, Callable[[int], int], list[int]], list[Any]]] = {}
    for name in names:
        if name == "remote_map":
            calls["remote_map"] = lambda s, f, xs: run_remotemap(s, f, xs, {})
            if options:
                label = " ".join(f"{k}={v!r}" for k, v in options.items())
                calls[f"remote_map {label}"] = \
                    lambda s, f, xs: run_remotemap(s, f, xs, options)
        elif name == "dask-jobqueue":
            calls[name] = run_jobqueue
        else:
            calls[name] = run_submitit
    return calls


# -- the rows ----------------------------------------------------------------------------------


def one_row(setup: Setup, outcome: Outcome,
            call: Callable[[Setup, Callable[[int], int], list[int]], list[Any]],
            clock: Clock) -> None:
    """Time ``call`` on ``outcome``'s workload; record seconds or failure, submissions, load."""
    xs = list(range(outcome.n))
    mark = sacct.high_water(setup.env)
    sampler = LoadSampler()
    started = time.perf_counter()
    try:
        values = call(setup, TASKS[outcome.workload], xs)
        took = time.perf_counter() - started
        error = None if values == [x + 1 for x in xs] else f"wrong results {values[:5]!r}..."
    except Exception as exc:  # a peer's failure is a finding to print, not a crash
        took, error = time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    outcome.loads.append(sampler.stop())
    outcome.submissions.append(sacct.settled_count(setup.env, mark))
    if error is None:
        outcome.seconds.append(took)
    else:
        outcome.failures.append(f"{error} (after {took:.1f} s)"[:400])
    clock.say(f"slurm {outcome.workload:<7} {outcome.peer:<28} "
              f"{'failed: ' + error if error else f'{took:.2f} s'}; "
              f"{outcome.submissions[-1].describe()}")


def warm_up(setup: Setup, names: Sequence[str]) -> None:
    """Import every peer's modules and pass one job through SLURM (its first scheduling round
    after start is slower), so no row pays for either."""
    modules = {"remote_map": ["remotemap", "soma_workflow.client"],
               "dask-jobqueue": ["dask.distributed", "dask_jobqueue"],
               "submitit": ["submitit"]}
    for name in names:
        for module in modules[name]:
            importlib.import_module(module)
    done = subprocess.run(["sbatch", "--parsable", "--wait", "-o", "/dev/null", "--wrap",
                           "true"], env=setup.env, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"warm-up sbatch --wait failed (exit {done.returncode}, "
                           f"SLURM_CONF={setup.env.get('SLURM_CONF')}): {done.stderr[-300:]}")


def run_rows(setup: Setup, sizes: dict[str, int], names: Sequence[str],
             options: dict[str, Any], repeats: int, clock: Clock) -> list[Outcome]:
    """Every peer on every workload, ``repeats`` rounds, the peers taking turns (every other
    round in reverse order, so a change in the machine's load falls on all alike)."""
    calls = peer_calls(names, options)
    outcomes = {(w, p): Outcome(p, w, n) for w, n in sizes.items() for p in calls}
    warm_up(setup, names)
    for k in range(repeats):
        order = list(calls) if k % 2 == 0 else list(calls)[::-1]
        for workload in sizes:
            for peer in order:
                one_row(setup, outcomes[workload, peer], calls[peer], clock)
    return list(outcomes.values())


def run_slurm(sizes: dict[str, int], names: Sequence[str], options: dict[str, Any],
              repeats: int, submitit_limit: float, clock: Clock) -> list[str]:
    """Start the private SLURM, run the rows, return Markdown lines (or why it cannot run)."""
    if os.geteuid() != 0:
        return ["SLURM peers: cannot run here: starting the private SLURM needs root", ""]
    from tests.infra.slurm import SingleNodeSlurm

    with SingleNodeSlurm(cpus=SLOTS) as slurm, \
            tempfile.TemporaryDirectory(prefix="peers-slurm-") as shared:
        env = slurm.env()
        os.environ.update(slurm.client_env())  # dask-jobqueue and submitit call sbatch with it
        setup = Setup(env, str(slurm.conf_path), slurm.partition, shared, submitit_limit)
        outcomes = run_rows(setup, sizes, names, options, repeats, clock)
    ideal = {w: ideal_seconds(n, SLEEP_S if w == "sleep" else 0.0, SLOTS)
             for w, n in sizes.items()}
    return render(outcomes, ideal, SLOTS, repeats)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The SLURM options, shared by this module's CLI and :mod:`benchmarks.peers`."""
    parser.add_argument("--cluster-option", action="append", default=[], type=cluster_option,
                        metavar="KEY=VALUE",
                        help="a [cluster] option for an extra remote_map row beside the plain "
                             "one (repeatable; VALUE is read as TOML, else as text)")
    parser.add_argument("--slurm-peers", default=",".join(PEER_NAMES),
                        help=f"comma-separated subset of {','.join(PEER_NAMES)}")
    parser.add_argument("--slurm-repeats", type=int, default=1,
                        help="rounds of the SLURM rows (median and range reported)")
    parser.add_argument("--submitit-limit", type=float, default=300.0,
                        help="seconds before submitit's array is cancelled (default 300)")


def slurm_peer_names(parser: argparse.ArgumentParser, text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(PEER_NAMES))
    if unknown:
        parser.error(f"unknown --slurm-peers {', '.join(unknown)}; valid: {','.join(PEER_NAMES)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers_slurm",
        description='remote_map(mode="cluster") beside dask-jobqueue and submitit on a private '
                    "single-node SLURM (16 slots), end to end, with sbatch counts from sacct.")
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes {QUICK} instead of {FULL}")
    add_arguments(parser)
    args = parser.parse_args(argv)
    names = slurm_peer_names(parser, args.slurm_peers)
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="remotemap-bench-state-") as state:
        isolate_environment(os.path.join(state, "config"))  # remotemap's defaults, no user file
        os.environ["XDG_STATE_HOME"] = state  # remotemap's run registry: not the user's
        lines = run_slurm(QUICK if args.quick else FULL, names, dict(args.cluster_option),
                          args.slurm_repeats, args.submitit_limit, clock)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
