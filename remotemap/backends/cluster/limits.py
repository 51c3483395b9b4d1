"""A SLURM partition's limits, checked before a run makes anything.

SLURM accepts a job that asks for more than its partition allows (``EnforcePartLimits=NO``,
the default) and leaves it pending for ever, ``PENDING (PartitionTimeLimit)``. So before a run
makes its directory, the caller asks the submitting host (``scontrol -o show partition``, and
``sinfo`` for the nodes' CPUs and memory when the run asks for CPUs or memory) and refuses a
``walltime``, ``memory``, ``cpus_per_task`` or ``worker_slots`` (x ``cpus_per_task``) above
the partition's ``MaxTime``, ``MaxMemPerNode``, ``MaxCPUsPerNode`` or the largest node, and a
partition that does not exist. A limit that is ``UNLIMITED`` or cannot be read lets the run
go: SLURM judges it then.

``MaxMemPerCPU`` is not a reason to refuse: SLURM raises the job's CPUs to fit it.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from remotemap.backends.cluster.files import ClusterError, RunFiles
from remotemap.backends.cluster.settings import walltime_seconds

log = logging.getLogger("remotemap")

#: What ``scontrol`` prints for a limit that is not set.
_NO_LIMIT = frozenset({"", "UNLIMITED", "INFINITE", "NONE", "N/A", "(null)"})
#: Memory units SLURM accepts, in megabytes (a number without a unit is megabytes).
_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


class PartitionRefused(ClusterError):
    """The run asks for what its partition does not have (or the partition does not exist):
    refused before anything was made. ``key`` is the config key at fault."""

    def __init__(self, message: str, *, key: str, partition: str) -> None:
        super().__init__(message)
        self.key = key
        self.partition = partition

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only data: pickled explicitly
        return (_partition_refused, (str(self), self.key, self.partition))


def _partition_refused(message: str, key: str, partition: str) -> PartitionRefused:
    return PartitionRefused(message, key=key, partition=partition)


@dataclass(frozen=True)
class Partition:
    """One partition as ``scontrol -o show partition`` describes it; limits as SLURM wrote
    them (``None``: no limit)."""

    name: str
    default: bool
    max_time: str | None
    max_mem_per_node: str | None
    max_cpus_per_node: str | None


def parse_partitions(text: str) -> dict[str, Partition]:
    """The partitions of ``scontrol -o show partition`` output (one line each), by name."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = dict(token.partition("=")[::2] for token in line.split() if "=" in token)
        name = fields.get("PartitionName")
        if not name:
            continue

        def limit(key: str, fields: dict[str, str] = fields) -> str | None:
            value = fields.get(key, "")
            return None if value.upper() in _NO_LIMIT else value

        partitions[name] = Partition(name, fields.get("Default") == "YES", limit("MaxTime"),
                                     limit("MaxMemPerNode"), limit("MaxCPUsPerNode"))
    return partitions


def parse_nodes(text: str) -> tuple[int | None, int | None]:
    """The most CPUs and the most memory (MB) of one node, from ``sinfo -h -o '%c|%m'``
    (one line per group of alike nodes; ``4+`` when they differ); None when unreadable."""
    cpus: list[int] = []
    memory: list[int] = []
    for line in text.splitlines():
        first, _, second = line.strip().partition("|")
        if first.rstrip("+").isdigit():
            cpus.append(int(first.rstrip("+")))
        if second.rstrip("+").isdigit():
            memory.append(int(second.rstrip("+")))
    return max(cpus, default=None), max(memory, default=None)


def megabytes(text: str) -> float | None:
    """SLURM's memory sizes (``500``, ``500M``, ``4G``, ``1T``) in MB; None if not one."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.strip().upper())
    if not match:
        return None
    return float(match.group(1)) * _MB[match.group(2) or "M"]


def _seconds(text: str) -> int | None:
    try:
        return walltime_seconds(text)
    except ValueError:
        return None


def requested_partition(settings: Mapping[str, Any]) -> tuple[str, str]:
    """The partition the jobs go to, and the config key naming it ("" when the default)."""
    chosen = (str(settings.get("queue") or ""), "cluster.queue")
    for option in settings.get("native_options") or []:
        try:
            words = shlex.split(option)
        except ValueError:  # unbalanced quotes: sbatch --test-only will name it
            words = option.split()
        for i, word in enumerate(words):
            if word.startswith("--partition="):
                chosen = (word.split("=", 1)[1], "cluster.native_options")
            elif word in ("-p", "--partition") and i + 1 < len(words):
                chosen = (words[i + 1], "cluster.native_options")
    return chosen


def limits_problem(settings: Mapping[str, Any], partitions: Mapping[str, Partition],
                   nodes: tuple[int | None, int | None], where: str) -> PartitionRefused | None:
    """Why SLURM would leave the jobs of a run with ``settings`` pending (or refuse them), or
    None. ``nodes``: the most CPUs and memory (MB) of one node of the partition."""
    name, key = requested_partition(settings)
    if "," in name:
        return None  # SLURM picks one of several partitions: its call, judged when it does
    if name:
        part = partitions.get(name)
        if part is None:
            return PartitionRefused(
                f"{key}: partition {name!r} does not exist on {where} (its partitions: "
                f"{', '.join(partitions) or 'none'})", key=key, partition=name)
    else:
        part = next((p for p in partitions.values() if p.default), None)
        if part is None:
            return None
    walltime, memory, cpus = settings.get("walltime"), settings.get("memory"), \
        int(settings.get("cpus_per_task") or 0)
    wanted_s = _seconds(str(walltime)) if walltime else None
    limit_s = _seconds(part.max_time) if part.max_time else None
    if wanted_s is not None and limit_s is not None and wanted_s > limit_s:
        return _refused("cluster.walltime", walltime, part,
                        f"partition {part.name!r} MaxTime {part.max_time}")
    wanted_mb = megabytes(str(memory)) if memory else None
    limit_mb = megabytes(part.max_mem_per_node) if part.max_mem_per_node else None
    if wanted_mb is not None and limit_mb is not None and wanted_mb > limit_mb:
        return _refused("cluster.memory", memory, part,
                        f"partition {part.name!r} MaxMemPerNode {limit_mb:g} MB")
    if wanted_mb is not None and nodes[1] is not None and wanted_mb > nodes[1]:
        return _refused("cluster.memory", memory, part,
                        f"the largest node of partition {part.name!r} ({nodes[1]} MB)")
    limit_cpus = part.max_cpus_per_node
    if cpus and limit_cpus is not None and limit_cpus.isdigit() and cpus > int(limit_cpus):
        return _refused("cluster.cpus_per_task", cpus, part,
                        f"partition {part.name!r} MaxCPUsPerNode {limit_cpus}")
    if cpus and nodes[0] is not None and cpus > nodes[0]:
        return _refused("cluster.cpus_per_task", cpus, part,
                        f"the largest node of partition {part.name!r} ({nodes[0]} CPUs)")
    return _slots_problem(settings, part, nodes[0])


def _slots_problem(settings: Mapping[str, Any], part: Partition, node_cpus: int | None
                   ) -> PartitionRefused | None:
    """A worker job of ``worker_slots`` slots asks for slots x ``cpus_per_task`` CPUs (1 if
    unset): refused above the partition's or its largest node's CPUs, as ``cpus_per_task``."""
    slots = int(settings.get("worker_slots") or 0)
    if slots < 2 or settings.get("dispatch") == "jobs":
        return None
    cpus = slots * int(settings.get("cpus_per_task") or 1)
    value = f"{slots} ({cpus} CPUs a worker job)"
    limit = part.max_cpus_per_node
    if limit is not None and limit.isdigit() and cpus > int(limit):
        return _refused("cluster.worker_slots", value, part,
                        f"partition {part.name!r} MaxCPUsPerNode {limit}")
    if node_cpus is not None and cpus > node_cpus:
        return _refused("cluster.worker_slots", value, part,
                        f"the largest node of partition {part.name!r} ({node_cpus} CPUs)")
    return None


def _refused(key: str, value: object, part: Partition, limit: str) -> PartitionRefused:
    return PartitionRefused(f"{key} {str(value)!r} exceeds {limit}: SLURM would never start "
                            "the jobs; ask for less, or choose another partition "
                            "(cluster.queue)", key=key, partition=part.name)


def slots_that_fit(settings: Mapping[str, Any], part: Partition, node_cpus: int | None
                   ) -> int | None:
    """The most slots a worker job of automatic size (``worker_slots`` 0) may have: each takes
    ``cpus_per_task`` CPUs (1 if unset), within the partition's MaxCPUsPerNode and its
    largest node. None when neither is known."""
    known = [node_cpus] if node_cpus else []
    if part.max_cpus_per_node is not None and part.max_cpus_per_node.isdigit():
        known.append(int(part.max_cpus_per_node))
    if not known:
        return None
    return max(1, min(known) // max(1, int(settings.get("cpus_per_task") or 1)))


def _auto_slots(settings: Mapping[str, Any]) -> bool:
    return not settings.get("worker_slots") and settings.get("dispatch") != "jobs"


def check_partition(files: RunFiles, settings: Mapping[str, Any]) -> int | None:
    """Refuse (:class:`PartitionRefused`) a SLURM run its partition cannot take, asking the
    submitting host; nothing is made there. Limits that cannot be read let the run go.
    Returns :func:`slots_that_fit` when worker jobs may get slots automatically, else None."""
    if settings.get("scheduler") != "slurm":
        return None
    env = {"SLURM_CONF": str(settings["slurm_conf"])} if settings.get("slurm_conf") else {}
    code, out, err = files.command(["scontrol", "-o", "show", "partition"], env)
    if code != 0:
        log.debug("cannot read the partitions on %s (%s): not checked", files.label,
                  err.strip() or f"exit status {code}")
        return None
    partitions = parse_partitions(out)
    nodes: tuple[int | None, int | None] = (None, None)
    name = requested_partition(settings)[0] or next(
        (p.name for p in partitions.values() if p.default), "")
    if name in partitions and (settings.get("memory") or settings.get("cpus_per_task")
                               or int(settings.get("worker_slots") or 0) > 1
                               or _auto_slots(settings)):
        code, out, _ = files.command(["sinfo", "-h", "-p", name, "-o", "%c|%m"], env)
        if code == 0:
            nodes = parse_nodes(out)
    problem = limits_problem(settings, partitions, nodes, files.label)
    if problem is not None:
        raise problem
    part = partitions.get(name)
    return slots_that_fit(settings, part, nodes[0]) if part and _auto_slots(settings) else None
