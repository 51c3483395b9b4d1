"""The ``slurm_workers`` probe of :mod:`benchmarks.ab`: issue 15's two SLURM workloads through
``remote_map(mode="cluster", dispatch="workers")`` beside dask-jobqueue (2 jobs x 8 threads),
on the private single-node SLURM of :mod:`benchmarks.peers_slurm` (16 slots; needs root).
The remote_map row is the plain one: ``dispatch="auto"`` gives workers for both workloads
(more than 32 tasks on a batch scheduler), on both sides.

Each probe starts its own SLURM, warms it up (one job, every module imported), then runs each
workload once with remote_map and once with dask-jobqueue, in turns, through the rows of
:mod:`benchmarks.peers_slurm` (end to end, results checked). Figures: seconds of each row,
and remote_map / dask-jobqueue from the same probe (dask-jobqueue's code is the same on both
sides of the A/B, so its row measures the machine's load at that moment).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any


def probe_slurm_workers(tree: str) -> dict[str, Any]:
    from benchmarks.ab import use_tree

    use_tree(tree)
    from benchmarks import peers_slurm as ps
    from benchmarks.contenders import isolate_environment
    from benchmarks.timing import Clock
    from tests.infra.slurm import SingleNodeSlurm

    with tempfile.TemporaryDirectory(prefix="ab-slurm-") as state, \
            SingleNodeSlurm(cpus=ps.SLOTS) as slurm:
        isolate_environment(os.path.join(state, "config"))
        os.environ["XDG_STATE_HOME"] = state
        os.environ.update(slurm.client_env())
        setup = ps.Setup(slurm.env(), str(slurm.conf_path), slurm.partition, state, 300.0)
        rows = ps.run_rows(setup, ps.FULL, ["remote_map", "dask-jobqueue"],
                           {}, 1, Clock())
    seconds = {(o.workload, o.peer): (o.seconds or [float("nan")])[0] for o in rows}
    result: dict[str, Any] = {}
    for workload in ps.FULL:
        mine = seconds[workload, "remote_map"]
        peer = seconds[workload, "dask-jobqueue"]
        result[f"{workload}_s"] = mine
        result[f"{workload}_jq_s"] = peer
        result[f"{workload}_vs_jq"] = mine / peer
    return result
