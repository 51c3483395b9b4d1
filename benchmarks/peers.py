"""remotemap beside its peers, in one run: ``multiprocessing.Pool``, ``ProcessPoolExecutor``,
joblib and dask's ``LocalCluster`` on this machine; dask's ``SSHCluster`` over a loopback sshd;
dask-jobqueue's ``SLURMCluster`` and submitit on a private single-node SLURM.

Run from the project root, with the ``bench`` extra installed (``pip install -e .[bench]``)::

    .venv/bin/python -m benchmarks.peers [--quick] [--skip-remote]

Local workloads are those of :mod:`benchmarks.workloads` (tiny tasks, CPU-bound tasks, large
array arguments), run by every local peer in this one process, taking turns; then the cold
start: in fresh interpreters, the peer's imports, then a one-task call to its result, median
of 5, the peers taking turns. Every peer runs with its defaults, 2 workers. The remote peers
(:mod:`benchmarks.peers_remote`) are timed end to end, cluster start included; one that cannot
run here is named with the reason. Each workload is printed with the load average during it
and the share of CPU that other programs took.
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
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/peers.py): find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.contenders import ROOT, Func, Largs, Runner, isolate_environment
from benchmarks.cpumeter import CpuMeter
from benchmarks.peers_slurm import FULL as SLURM_FULL
from benchmarks.peers_slurm import QUICK as SLURM_QUICK
from benchmarks.peers_slurm import add_arguments as add_slurm_arguments
from benchmarks.peers_slurm import slurm_peer_names
from benchmarks.report import render_table
from benchmarks.tasks import add_one, byte_total
from benchmarks.timing import N_JOBS, Clock, interleaved_runs, warm_up
from benchmarks.workloads import FULL, QUICK, Cell, Row, Sizes, bench_cpu, bench_tiny

#: Column names: ``local`` is ``remote_map(mode="local")``, the subject of every ratio.
PEERS: tuple[str, ...] = ("serial", "local", "mp.Pool", "ProcessPoolExecutor", "joblib",
                          "dask")
COLD_REPEATS = 5


class Peer(Runner):
    """A :class:`Runner` that also knows ``ProcessPoolExecutor`` and dask's LocalCluster."""

    def __init__(self, name: str, n_jobs: int = N_JOBS) -> None:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
        self.name, self.n_jobs = name, n_jobs
        self._pool: Any = None
        self._tmp: str | None = None
        self.foreign_executor_resets = 0
        self._client: Any = None

    def map(self, func: Func, largs: Largs) -> list[Any]:
        if self.name == "ProcessPoolExecutor":
            if self._pool is None:
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(self.n_jobs)
            return list(self._pool.map(func, *zip(*largs, strict=True)))
        if self.name == "dask":
            if self._client is None:
                from dask.distributed import Client, LocalCluster

                cluster = LocalCluster(n_workers=self.n_jobs, threads_per_worker=1,
                                       processes=True, dashboard_address=":0")
                self._client = Client(cluster)
            futures = self._client.map(func, *zip(*largs, strict=True), pure=False)
            return list(self._client.gather(futures))
        return super().map(func, largs)

    def close(self) -> None:
        if self.name == "ProcessPoolExecutor" and self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._client is not None:
            cluster = self._client.cluster
            self._client.close()
            cluster.close()
            self._client = None
        super().close()


def bench_big(runners: dict[str, Runner], sizes: Sizes, clock: Clock) -> list[Row]:
    """Large array arguments, MB (10^6 bytes) sent per second: as the workload of
    :mod:`benchmarks.workloads`, with an exact task (a float sum's last bit differs)."""
    import numpy as np

    n_items = sizes.big_mb * 1_000_000 // 8
    arrays = [np.random.default_rng(i).random(n_items) for i in range(sizes.big_tasks)]
    largs = [(a,) for a in arrays]
    total_mb = sizes.big_tasks * sizes.big_mb
    times = interleaved_runs(runners, byte_total, largs, [byte_total(a) for a in arrays],
                             sizes.repeats)
    cells = {name: Cell(total_mb / min(times[name]), sizes.big_tasks, times[name])
             for name in runners}
    for name in runners:
        clock.say(f"big   {name:<20} best {min(times[name]):.3f} s for {total_mb} MB")
    title = f"3. {sizes.big_tasks} x {sizes.big_mb} MB array argument: throughput"
    return [Row("big_mb_per_s", title, "MB/s", True, cells)]


def import_peer(name: str) -> None:
    """What a user of peer ``name`` imports before the call (timed apart in the cold start)."""
    if name == "local":
        from remotemap import remote_map  # noqa: F401
    elif name == "mp.Pool":
        import multiprocessing  # noqa: F401
    elif name == "ProcessPoolExecutor":
        from concurrent.futures import ProcessPoolExecutor  # noqa: F401
    elif name == "joblib":
        import joblib  # noqa: F401
    elif name == "dask":
        from dask.distributed import Client, LocalCluster  # noqa: F401


def cold_one(name: str) -> dict[str, float]:
    """In this (fresh) interpreter: the imports, then a one-task call until its result."""
    started = time.perf_counter()
    import_peer(name)
    imported = time.perf_counter()
    peer = Peer(name)
    values = peer.map(add_one, [(41,)])
    done = time.perf_counter()
    peer.close()
    if values != [42]:
        raise AssertionError(f"{name} returned {values!r}, expected [42]")
    return {"import_s": imported - started, "first_result_s": done - imported}


def _cold_run(name: str) -> dict[str, float]:
    # Byte-code caches written as any installed package has them (this checkout's
    # environment may forbid writing them, which would charge remotemap compiling).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peers", "--cold-one", name],
                          cwd=ROOT, capture_output=True, text=True, check=False, env=env,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of {name} failed ({proc.returncode}):\n{proc.stderr}")
    report: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def bench_cold(names: Sequence[str], clock: Clock, repeats: int = COLD_REPEATS) -> list[str]:
    """Median over ``repeats`` fresh interpreters per peer, the peers taking turns (one
    untimed run each first, which writes byte-code caches)."""
    peers = [n for n in names if n != "serial"]
    for name in peers:
        _cold_run(name)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in peers}
    for k in range(repeats):
        for name in (peers if k % 2 == 0 else peers[::-1]):
            runs[name].append(_cold_run(name))
    def to_result(name: str) -> float:
        return statistics.median(r["import_s"] + r["first_result_s"] for r in runs[name])

    base = to_result("ProcessPoolExecutor")
    lines = ["| peer | import (s) | import to first result (s) | x ProcessPoolExecutor |",
             "|---|---|---|---|"]
    for name in peers:
        imp = statistics.median(r["import_s"] for r in runs[name])
        first = to_result(name)
        clock.say(f"cold  {name:<20} import {imp:.3f} s, first result {first:.3f} s")
        lines.append(f"| {name} | {imp:.3f} | {first:.3f} | {first / base:.1f} |")
    return lines


def load_note(meter: CpuMeter, started_load: float) -> str:
    share = meter.others_share()
    others = "unknown" if share is None else f"{share:.0%}"
    return (f"load average {started_load:.2f} -> {os.getloadavg()[0]:.2f}; CPU taken by other "
            f"programs: {others}")


def run_local(sizes: Sizes, workloads: Sequence[str], clock: Clock) -> list[str]:
    """The local peers on the chosen workloads: Markdown lines, one table per workload."""
    out: list[str] = []
    meter = CpuMeter()
    benches = {"tiny": bench_tiny, "cpu": bench_cpu, "big": bench_big}
    # mp.Pool forks: start it first, while this process has no other threads.
    order = sorted(PEERS, key=lambda n: n != "mp.Pool")
    peers = {name: Peer(name) for name in order}
    try:
        for peer in peers.values():
            if peer.name != "serial":
                warm_up(peer)
        columns: dict[str, Runner] = {name: peers[name] for name in PEERS}
        for workload, bench in benches.items():
            if workload not in workloads:
                continue
            load = os.getloadavg()[0]
            meter.start()
            rows: list[Row] = bench(columns, sizes, clock)
            out += [f"### {workload}", "", render_table(rows, PEERS, judge=False), "",
                    load_note(meter, load), ""]
    finally:
        for peer in peers.values():
            peer.close()
    if "cold" in workloads:
        load = os.getloadavg()[0]
        meter.start()
        out += ["### cold start (fresh interpreters, median of "
                f"{COLD_REPEATS})", "", *bench_cold(PEERS, clock), "", load_note(meter, load), ""]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="remotemap beside multiprocessing.Pool, ProcessPoolExecutor, joblib, dask "
                    "(LocalCluster, SSHCluster), dask-jobqueue and submitit, in one run.",
        epilog="Needs the bench extra (pip install -e .[bench]); the remote peers need root "
               "(a loopback sshd, a private single-node SLURM) and say so when they cannot run.")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--workloads", default="tiny,cpu,big,cold",
                        help="comma-separated subset of tiny,cpu,big,cold (default: all)")
    parser.add_argument("--skip-remote", action="store_true",
                        help="leave out SSHCluster, SLURMCluster and submitit")
    parser.add_argument("--remote-tasks", type=int, default=200,
                        help="tasks per SSH peer call (default: 200); the SLURM peers run "
                             "their own workloads (benchmarks.peers_slurm)")
    add_slurm_arguments(parser)
    parser.add_argument("--cold-one", metavar="PEER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.workloads.split(",")) - {"tiny", "cpu", "big", "cold"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}; valid: tiny,cpu,big,cold")
    args.slurm_peers = slurm_peer_names(parser, args.slurm_peers)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cold_one:
        print(json.dumps(cold_one(args.cold_one)))
        return 0
    clock = Clock()
    lines = [f"## peers, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
             f"{'quick' if args.quick else 'full'} sizes", ""]
    with tempfile.TemporaryDirectory(prefix="remotemap-bench-config-") as config_home:
        isolate_environment(config_home)
        lines += run_local(QUICK if args.quick else FULL, args.workloads.split(","), clock)
        if not args.skip_remote:
            from benchmarks.peers_remote import SlurmChoice, run_remote

            slurm = SlurmChoice(SLURM_QUICK if args.quick else SLURM_FULL,
                                args.slurm_peers,
                                dict(args.cluster_option), args.slurm_repeats,
                                args.submitit_limit)
            lines += run_remote(args.remote_tasks, clock, slurm)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
