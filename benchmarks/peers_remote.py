"""The remote peers of :mod:`benchmarks.peers`, each beside the remotemap mode that does its job.

* dask ``SSHCluster`` and ``remote_map(mode="ssh")``, on a loopback sshd started here for the
  tests' user (as :mod:`benchmarks.ssh` does; needs root). SSHCluster runs ``distributed`` in
  that user's Python: it is installed there if missing.
* dask-jobqueue ``SLURMCluster``, submitit's ``map_array`` and ``remote_map(mode="cluster")``
  on the tests' private single-node SLURM: :mod:`benchmarks.peers_slurm`, with its own
  workloads (1,000 trivial tasks; 100 x ``sleep(1)``) and ``sbatch`` counts.

Each figure is end to end, as a user sees it: starting the cluster or connecting, running
``n`` tasks ``x + 1``, every result in hand, the cluster stopped. A peer that cannot run here
gets a line saying why instead of a figure.
"""

from __future__ import annotations

import contextlib
import operator
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.cpumeter import CpuMeter
from benchmarks.peers_slurm import run_slurm
from benchmarks.timing import N_JOBS, Clock


@dataclass(frozen=True)
class SlurmChoice:
    """The SLURM rows asked for on the command line of :mod:`benchmarks.peers`."""

    sizes: dict[str, int]
    peers: Sequence[str]
    options: dict[str, Any]
    repeats: int
    submitit_limit: float


def add_one(x: int) -> int:
    return x + 1


def _timed(name: str, call: Callable[[list[int]], list[Any]], n: int,
           clock: Clock) -> tuple[str, str]:
    """``name``'s seconds for ``n`` tasks end to end, or why it could not run."""
    xs = list(range(n))
    load, meter = os.getloadavg()[0], CpuMeter()
    meter.start()
    started = time.perf_counter()
    try:
        values = call(xs)
    except Exception as exc:  # any peer failure is a finding to print, not a crash
        clock.say(f"remote {name}: cannot run here: {type(exc).__name__}: {exc}")
        return name, f"cannot run here: {type(exc).__name__}: {str(exc)[:300]}"
    took = time.perf_counter() - started
    if values != [x + 1 for x in xs]:
        return name, f"wrong results ({values[:5]!r}...)"
    share = meter.others_share()
    others = "?" if share is None else f"{share:.0%}"
    clock.say(f"remote {name}: {took:.2f} s for {n} tasks")
    return name, (f"{took:.2f} s ({took / n * 1e3:.1f} ms/task; load {load:.2f} -> "
                  f"{os.getloadavg()[0]:.2f}, other programs {others})")


# -- SSH ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sshd() -> Iterator[tuple[Any, Any, str]]:
    from tests.infra.sshd import SSHServer, ensure_test_user, install_remotemap_for_user

    user = ensure_test_user()
    python = str(install_remotemap_for_user(user))
    with SSHServer(user) as server:
        yield server, user, python


def _ensure_distributed(server: Any, python: str) -> None:
    """``distributed`` in the remote Python, at this one's version (SSHCluster needs both
    ends alike)."""
    from importlib.metadata import version

    ssh = ["ssh", "-F", str(server.ssh_config), "-o", "BatchMode=yes", server.alias]
    if subprocess.run([*ssh, python, "-c", "'import distributed'"], capture_output=True,
                      check=False).returncode == 0:
        return
    done = subprocess.run([*ssh, python, "-m", "pip", "install", "--quiet",
                           f"dask=={version('dask')}", f"distributed=={version('distributed')}"],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"installing distributed into {python} over ssh failed (exit "
                           f"{done.returncode}): {done.stderr.strip()[-300:]}")


def ssh_peers(n: int, clock: Clock) -> list[tuple[str, str]]:
    if os.geteuid() != 0:
        return [("SSHCluster, mode=ssh", "cannot run here: starting the loopback sshd needs "
                                         "root")]
    import cloudpickle

    from remotemap import remote_map

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the remote has no benchmarks
    found = []
    with _sshd() as (server, user, python):
        def ours(xs: list[int]) -> list[Any]:
            return remote_map(add_one, [(x,) for x in xs], mode="ssh", hosts=[server.alias],
                              ssh_config=str(server.ssh_config), python=python,
                              progress=False, n_jobs=N_JOBS)

        def dask_ssh(xs: list[int]) -> list[Any]:
            from dask.distributed import Client, SSHCluster

            _ensure_distributed(server, python)
            options = {"port": server.port, "username": user.name, "known_hosts": None,
                       "client_keys": [str(server.client_key)]}
            with SSHCluster([server.host, server.host], connect_options=options,
                            remote_python=python,
                            worker_options={"n_workers": N_JOBS, "nthreads": 1},
                            scheduler_options={"dashboard_address": None}) as cluster, \
                    Client(cluster) as client:
                # operator.add, not add_one: the remote Python is Debian's, of another
                # version, and a function sent by value (its byte code) does not load there.
                return list(client.gather(client.map(operator.add, xs, [1] * len(xs),
                                                     pure=False)))

        found.append(_timed("remote_map mode=ssh", ours, n, clock))
        found.append(_timed("dask SSHCluster", dask_ssh, n, clock))
    return found


def run_remote(n: int, clock: Clock, slurm: SlurmChoice | None = None) -> list[str]:
    """Markdown lines: every remote peer's figure, or why it could not run. The SLURM peers
    (:mod:`benchmarks.peers_slurm`) get their own table, with their own workloads."""
    lines = [f"### remote peers: {n} tasks x + 1, end to end (start and stop included)", "",
             "| peer | seconds |", "|---|---|"]
    try:
        found = ssh_peers(n, clock)
    except Exception as exc:  # the sshd could not start: say so, go on
        found = [("ssh_peers", f"cannot run here: {type(exc).__name__}: {exc}")]
    lines += [f"| {name} | {text} |" for name, text in found]
    lines.append("")
    if slurm is not None:
        try:
            lines += run_slurm(slurm.sizes, slurm.peers, slurm.options, slurm.repeats,
                               slurm.submitit_limit, clock)
        except Exception as exc:  # SLURM could not start: say so
            lines += [f"SLURM peers: cannot run here: {type(exc).__name__}: {exc}", ""]
    return lines
