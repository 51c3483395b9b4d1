"""A cluster run that asks for more than its SLURM partition allows is refused before anything
is made, naming the option, the value, the partition and its limit; a run whose jobs SLURM
holds back says why (log, progress bar, ``remotemap status``, ``pending_reasons``).

The parsers are tested on output recorded from the test SLURM (slurm-wlm 22.05); the rest runs
on that real SLURM (tests/infra/slurm_configs.py: partition ``short`` with small limits,
partition ``held`` down), and through a real sshd as the submitting host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.backends.cluster import PartitionRefused, cancel, collect, pending_reasons, submit
from remotemap.backends.cluster.limits import (
    limits_problem,
    megabytes,
    parse_nodes,
    parse_partitions,
    requested_partition,
)
from remotemap.backends.cluster.pending import (
    count_reasons,
    describe_reasons,
    parse_squeue,
    worrying,
)
from remotemap.cli import main as cli_main
from remotemap.errors import RemoteException
from tests import cluster_support
from tests.cluster_support import env_for_children, slurm_options, wait_for
from tests.infra.slurm import SingleNodeSlurm
from tests.infra.slurm_configs import DOWN_PARTITION, SHORT_PARTITION

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf

# `scontrol -o show partition` on the test SLURM (fields cut to those read and a few others;
# held's MaxTime set to a day, to read the D-HH:MM:SS form).
SCONTROL = """\
PartitionName=debug AllowGroups=ALL Default=YES QoS=N/A DefaultTime=00:10:00 MaxNodes=UNLIMITED MaxTime=00:10:00 MinNodes=0 MaxCPUsPerNode=UNLIMITED Nodes=localhost State=UP TotalCPUs=16 TotalNodes=1 JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=16,mem=4000M,node=1,billing=16
PartitionName=short AllowGroups=ALL Default=NO QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=00:01:00 MinNodes=0 MaxCPUsPerNode=2 Nodes=localhost State=UP TotalCPUs=16 TotalNodes=1 JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=1000 TRES=cpu=16,mem=4000M,node=1,billing=16
PartitionName=held AllowGroups=ALL Default=NO QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=1-00:00:00 MinNodes=0 MaxCPUsPerNode=UNLIMITED Nodes=localhost State=DOWN TotalCPUs=16 TotalNodes=1 JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=16,mem=4000M,node=1,billing=16
"""  # noqa: E501
# `squeue -h -o '%i|%T|%r'` with three jobs held back and one running.
SQUEUE = "8|PENDING|PartitionDown\n7|PENDING|PartitionTimeLimit\n9|PENDING|MaxMemPerLimit\n" \
         "10|RUNNING|None\n"
NODES = (16, 4000)


def _problem(**settings: Any) -> PartitionRefused | None:
    return limits_problem(settings, parse_partitions(SCONTROL), NODES, "login1")


# -- the parsers, on recorded output --------------------------------------------------------------
def test_partitions_are_read_with_their_limits() -> None:
    parts = parse_partitions(SCONTROL)
    assert list(parts) == ["debug", "short", "held"]
    assert parts["debug"].default and not parts["short"].default
    assert parts["short"].max_time == "00:01:00" and parts["held"].max_time == "1-00:00:00"
    assert parts["short"].max_mem_per_node == "1000" and parts["debug"].max_mem_per_node is None
    assert parts["short"].max_cpus_per_node == "2" and parts["debug"].max_cpus_per_node is None
    assert parse_partitions("Partition nope not found\n") == {}


def test_nodes_and_memory_sizes() -> None:
    assert parse_nodes("16|4000\n") == (16, 4000)
    assert parse_nodes("4+|1000\n32|256000+\n") == (32, 256000)
    assert parse_nodes("garbage") == (None, None)
    assert [megabytes(t) for t in ("500", "500M", "4G", "1T", "512K")] == \
        [500, 500, 4096, 1024 * 1024, 0.5]
    assert megabytes("lots") is None


def test_the_partition_comes_from_queue_or_native_options() -> None:
    assert requested_partition({"queue": "short"}) == ("short", "cluster.queue")
    assert requested_partition({"queue": ""}) == ("", "cluster.queue")
    for native in (["-p held"], ["--partition=held"], ["--partition held", "--exclusive"]):
        assert requested_partition({"queue": "short", "native_options": native}) == \
            ("held", "cluster.native_options")


def test_each_limit_is_named_with_option_value_and_partition() -> None:
    refused = _problem(queue="short", walltime="2:00:00")
    assert refused is not None and refused.key == "cluster.walltime"
    assert str(refused).startswith(
        "cluster.walltime '2:00:00' exceeds partition 'short' MaxTime 00:01:00")
    assert refused.partition == "short"
    refused = _problem(queue="short", memory="2G")
    assert refused is not None and "cluster.memory '2G' exceeds partition 'short' " \
        "MaxMemPerNode 1000 MB" in str(refused)
    refused = _problem(queue="short", cpus_per_task=4)
    assert refused is not None and "cluster.cpus_per_task '4' exceeds partition 'short' " \
        "MaxCPUsPerNode 2" in str(refused)
    # The default partition (debug) when no queue is given; its nodes' size.
    refused = _problem(memory="5G")
    assert refused is not None and "the largest node of partition 'debug' (4000 MB)" in \
        str(refused)
    refused = _problem(cpus_per_task=17)
    assert refused is not None and "(16 CPUs)" in str(refused)
    refused = _problem(queue="short", worker_slots=3)
    assert refused is not None and refused.key == "cluster.worker_slots"
    assert str(refused).startswith("cluster.worker_slots '3 (3 CPUs a worker job)' exceeds "
                                   "partition 'short' MaxCPUsPerNode 2")
    refused = _problem(worker_slots=8, cpus_per_task=4)  # 32 CPUs a job, on 16-CPU nodes
    assert refused is not None and "(16 CPUs)" in str(refused)
    assert _problem(worker_slots=8, cpus_per_task=4, dispatch="jobs") is None  # no slots
    assert _problem(worker_slots=8, cpus_per_task=2) is None
    refused = _problem(queue="nope")
    assert refused is not None and refused.key == "cluster.queue"
    assert str(refused) == ("cluster.queue: partition 'nope' does not exist on login1 (its "
                            "partitions: debug, short, held)")


def test_automatic_worker_slots_fit_the_partitions_nodes() -> None:
    from remotemap.backends.cluster.limits import slots_that_fit
    from remotemap.backends.cluster.settings import worker_layout

    parts = parse_partitions(SCONTROL)
    assert slots_that_fit({}, parts["debug"], 16) == 16
    assert slots_that_fit({"cpus_per_task": 4}, parts["debug"], 16) == 4
    assert slots_that_fit({}, parts["short"], 16) == 2  # MaxCPUsPerNode 2
    assert slots_that_fit({"cpus_per_task": 3}, parts["short"], 16) == 1  # refused elsewhere
    assert slots_that_fit({}, parts["debug"], None) is None  # nothing known: the default
    slurm = {"scheduler": "slurm", "worker_jobs": 0, "worker_slots": 0}
    assert worker_layout(slurm, 1000) == (2, 8)
    assert worker_layout({**slurm, "slots_that_fit": 2}, 1000) == (8, 2)  # as many loops
    assert worker_layout({**slurm, "slots_that_fit": 4, "worker_slots": 8}, 1000) == (2, 8)


def test_within_limits_or_unlimited_passes() -> None:
    assert _problem(queue="short", walltime="1", memory="1000M", cpus_per_task=2) is None
    assert _problem(walltime="10:00", memory="4000", cpus_per_task=16) is None
    assert _problem(queue="held", walltime="23:59:00") is None
    assert _problem(queue="short,debug", walltime="5") is None  # SLURM picks one of them
    assert _problem(walltime="100000", memory="1T") is not None  # debug: MaxTime 10 min
    assert limits_problem({"walltime": "100000"}, {}, (None, None), "h") is None  # unknown


def test_pending_reasons_read_counted_and_described() -> None:
    found = parse_squeue(SQUEUE)
    assert found["7"] == ("PENDING", "PartitionTimeLimit") and found["10"] == ("RUNNING", "None")
    rows = [{"status": "queued_active", "reason": "PartitionTimeLimit"},
            {"status": "queued_active", "reason": "PartitionTimeLimit"},
            {"status": "queued_active", "reason": "Resources"},
            {"status": "running", "reason": "Resources"}, {"status": "queued_active"}]
    counts = count_reasons(rows)
    assert counts == {"PartitionTimeLimit": 2, "Resources": 1}
    assert describe_reasons(counts) == (
        "2 jobs PENDING (PartitionTimeLimit: its walltime is above the partition's MaxTime), "
        "1 job PENDING (Resources)")
    assert worrying(counts) and not worrying({"Resources": 3, "Priority": 1})
    assert describe_reasons({}) == ""


# -- on the real SLURM ---------------------------------------------------------------------
def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.slurm
def test_a_run_over_the_partitions_limits_is_refused_and_makes_nothing(
        swf: None, slurm_cluster: SingleNodeSlurm, state_home: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    options = {"mode": "cluster", "progress": False, **slurm_options(slurm_cluster, runs)}
    before = _tree(state_home)
    with pytest.raises(PartitionRefused) as info:
        remote_map(abs, [(-1,)], queue=SHORT_PARTITION, walltime="2:00:00", **options)
    assert str(info.value).startswith(
        "cluster.walltime '2:00:00' exceeds partition 'short' MaxTime 00:01:00")
    with pytest.raises(PartitionRefused, match=r"cluster\.cpus_per_task '4' exceeds partition "
                                               r"'short' MaxCPUsPerNode 2"):
        remote_map(abs, [(-1,)], queue=SHORT_PARTITION, cpus_per_task=4, **options)
    with pytest.raises(PartitionRefused, match=r"partition 'gpu' does not exist on localhost "
                                               r"\(its partitions: debug, short, held\)"):
        submit(abs, [(-1,)], queue="gpu", **slurm_options(slurm_cluster, runs))
    assert not runs.exists()
    assert _tree(state_home) == before
    # Within the limits, the same partition runs it.
    assert remote_map(abs, [(-1,)], queue=SHORT_PARTITION, walltime="1", cpus_per_task=2,
                      memory="500M", **options) == [1]



@pytest.mark.slurm
def test_automatic_worker_jobs_ask_no_more_cpus_than_the_partition_gives(
        swf: None, slurm_cluster: SingleNodeSlurm, state_home: Path, tmp_path: Path) -> None:
    """``short`` takes at most 2 CPUs a job: automatic slots are 2 there, not 8 (a job of 8
    would be refused by sbatch, and every task fail with it)."""
    options = {"mode": "cluster", "progress": False, "keep_files": True,
               **slurm_options(slurm_cluster, tmp_path / "runs")}
    assert remote_map(abs, [(-i,) for i in range(20)], queue=SHORT_PARTITION,
                      dispatch="workers", walltime="1", **options) == list(range(20))
    (run,) = (tmp_path / "runs").iterdir()
    spec = json.loads((run / "rounds" / "0.json").read_text())
    assert (spec["slots"], spec["workers"]) == (2, 8)
    assert "--cpus-per-task=2" in spec["native"]


@pytest.mark.slurm
def test_status_and_pending_reasons_say_why_jobs_wait(
        swf: None, slurm_cluster: SingleNodeSlurm, runs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_id = submit(abs, [(-1,), (-2,)], queue=DOWN_PARTITION, tasks_per_job=2,
                    **slurm_options(slurm_cluster, runs_dir))
    try:
        wait_for("the pending reason", lambda: pending_reasons(run_id) == {"PartitionDown": 1})
        capsys.readouterr()
        cli_main(["status"])
        out = capsys.readouterr().out
        block = out[out.index(run_id):]
        assert "jobs: queued_active 1" in block
        assert "waiting: 1 job PENDING (PartitionDown: the partition is down)" in block
    finally:
        cancel(run_id, timeout=60)
    with pytest.raises(RemoteException):
        collect(run_id, timeout=30, remove=True)


_HELD_RUN = """
import sys
from remotemap import remote_map
remote_map(abs, [(-1,)], mode="cluster", queue=sys.argv[1], scheduler="slurm",
           slurm_conf=sys.argv[2], shared_dir=sys.argv[3], poll_interval=0.5, progress=True)
"""


@pytest.mark.slurm
def test_a_waiting_run_says_why_in_its_log_and_progress_bar(
        swf: None, slurm_cluster: SingleNodeSlurm, state_home: Path, tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    with err.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", _HELD_RUN, DOWN_PARTITION,
                                 str(slurm_cluster.conf_path), str(tmp_path / "runs")],
                                stderr=sink, stdout=subprocess.DEVNULL,
                                env=env_for_children(state_home))
    try:
        text = wait_for("the reason on stderr", lambda: (
            "waiting: 1 job PENDING (PartitionDown" in (t := err.read_text()) and t))
        assert "WARNING: cluster run " in text
        assert "waits: 1 job PENDING (PartitionDown: the partition is down)" in text
        assert text.count("waits: ") == 1  # logged once for the one reason
    finally:
        proc.send_signal(signal.SIGTERM)  # unwinds like Ctrl-C: the run cancels its jobs
        proc.wait(timeout=90)
    queue = slurm_cluster.run(["squeue", "-h", "-t", "PD,R", "-p", DOWN_PARTITION]).stdout
    assert queue.strip() == ""


# -- through a submitting host over SSH --------------------------------------------------
@pytest.mark.slurm
@pytest.mark.ssh
def test_over_ssh_limits_are_read_there_and_python_may_start_with_a_tilde(
        swf: None, slurm_cluster: SingleNodeSlurm, sshd_host: Any,
        rmtest_can_submit: Path) -> None:
    home = Path(sshd_host.user.home)
    # A directory of this test's own: another session's leftovers must not count.
    shared = f".cache/remotemap/cluster-limits-{os.getpid()}-{time.monotonic_ns()}"
    options = {"mode": "cluster", "scheduler": "slurm", "host": sshd_host.alias,
               "ssh_config": str(sshd_host.ssh_config),
               "python": "~/" + str(rmtest_can_submit.relative_to(home)),
               "slurm_conf": str(slurm_cluster.conf_path), "poll_interval": 0.5,
               "shared_dir": shared, "queue": SHORT_PARTITION, "progress": False}
    before = ((home / shared).exists(), _tree(home / shared))
    with pytest.raises(PartitionRefused, match=r"exceeds partition 'short' MaxTime 00:01:00"):
        remote_map(abs, [(-1,)], walltime="5", **options)
    assert ((home / shared).exists(), _tree(home / shared)) == before  # nothing made there
    # "~/venvs/.../python" starts the engine (over SSH) and the jobs (from the engine).
    assert remote_map(abs, [(-3,)], walltime="1", **options) == [3]
    assert list((home / shared).iterdir()) == []
    (home / shared).rmdir()
