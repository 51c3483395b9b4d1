"""The cluster mode through a login host that shares nothing with the caller: the isolated
host (its own network, files, hostname, user and Python, remotemap from a wheel) with a
single-node SLURM of its own, reached over SSH as ``cluster.host``. What the caller's machine
has (the checkout, its venv, /tmp, its own SLURM) is not there, so these pass only if the
cluster mode sends everything it needs: results in order, a failure with its traceback and
host, a crash failing its own task, staged inputs, a workflow.
"""

from __future__ import annotations

import getpass
import itertools
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import tests.taskfuncs
from remotemap import RemoteException, Result, Staged, Workflow, remote_map, staged_path
from tests import cluster_support
from tests.infra.host_python import HOST_PYTHON_DIR
from tests.infra.login_user import REPO
from tests.infra.netns import cleanup_stale_netns
from tests.isolated_fixtures import IsolatedLoginHost
from tests.taskfuncs import crash_on, fail_on
from tests.test_isolated_host import _netns_names, _running, hold_then_kill

pytestmark = [pytest.mark.slurm, pytest.mark.ssh]

# The host has remotemap but not this test suite: the tasks travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(tests.taskfuncs)

state_home = cluster_support.state_home  # this module's run registry, not the real one
_numbers = itertools.count()


@pytest.fixture
def on_host(isolated_cluster_host: IsolatedLoginHost) -> Iterator[dict[str, Any]]:
    """The cluster mode through the login host, in a shared directory of the test's own
    there; it must be empty after the test (each run removes its directory)."""
    host = isolated_cluster_host
    shared = f".cache/remotemap/cluster-{os.getpid()}-{next(_numbers)}"
    yield host.cluster_options(shared)
    there = shlex.quote(str(host.home / shared))
    left = host.as_root(["sh", "-c", f"[ ! -d {there} ] || ls -A {there}"])
    assert left == "", f"run directories left on {host.hostname}: {left}"


def where_am_i(i: int) -> dict[str, Any]:
    return {"i": i, "host": socket.gethostname(), "user": getpass.getuser(),
            "prefix": sys.prefix, "job": os.environ.get("SLURM_JOB_ID", ""),
            "conf": os.environ.get("SLURM_CONF", "")}  # fmt: skip


def test_results_come_back_in_order_from_jobs_of_the_hosts_own_slurm(
        isolated_cluster_host: IsolatedLoginHost, on_host: dict[str, Any]) -> None:
    host = isolated_cluster_host
    rows = remote_map(where_am_i, [(i,) for i in range(6)], tasks_per_job=2, **on_host)
    assert [row["i"] for row in rows] == list(range(6))
    assert {(row["host"], row["user"], row["prefix"], row["conf"]) for row in rows} == {
        (host.hostname, host.user, str(HOST_PYTHON_DIR), host.slurm_conf)}
    jobs = sorted({row["job"] for row in rows})
    assert len(jobs) == 3 and all(jobs)  # two tasks per SLURM job
    # The host's own accounting knows these jobs (that they ran as the host's user is the
    # tasks' own word above: after the contract suite's runs there, sacct's User column
    # once read "root" for them, which is not a claim about who ran them).
    known = host.slurm.run(["sacct", "-n", "-X", "-P", "-a", "-j", ",".join(jobs),
                            "-o", "JobID,State"]).stdout.split()  # fmt: skip
    assert sorted(known) == [f"{job}|COMPLETED" for job in jobs]


def test_a_failing_task_raises_with_its_traceback_and_host(
        isolated_cluster_host: IsolatedLoginHost, on_host: dict[str, Any]) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(fail_on, [(i,) for i in range(4)], **on_host)
    error = info.value
    assert error.failed_indices == [2]
    [failure] = error.failures
    assert (failure.index, failure.exception_type, failure.kind) == (2, "ValueError",
                                                                     "exception")
    assert "bad value 2" in failure.message
    assert "in fail_on" in failure.traceback and "bad value" in failure.traceback
    assert failure.host == isolated_cluster_host.hostname
    assert [error.results[i] for i in (0, 1, 3)] == [0, 1, 3]


def test_a_task_that_kills_its_process_fails_alone(on_host: dict[str, Any]) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(crash_on, [(i, "sigkill") for i in range(5)], tasks_per_job=1, **on_host)
    assert info.value.failed_indices == [3]
    assert info.value.failures[0].kind == "crash"
    assert [info.value.results[i] for i in (0, 1, 2, 4)] == [0, 1, 2, 4]


def _read_staged(path: str, caller_paths: list[str]) -> tuple[str, str, str, list[str]]:
    there = [p for p in caller_paths if os.path.lexists(p)]
    if there:  # (no assert: pytest's rewriting of it would travel with the function)
        raise AssertionError(f"caller paths exist on {socket.gethostname()}: {there}")
    atlas = staged_path("atlas.txt")
    return path, Path(path).read_text(), Path(atlas).read_text(), there


def test_inputs_only_the_caller_has_are_staged_to_the_host(
        isolated_cluster_host: IsolatedLoginHost, on_host: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub.txt").write_text("subject")
    (tmp_path / "atlas.txt").write_text("atlas")
    # The input, its folder, the checkout and this interpreter: none of them is there.
    caller = [str(tmp_path / "sub.txt"), str(tmp_path), str(REPO), sys.prefix]
    [(path, text, atlas, there)] = remote_map(
        _read_staged, [(Staged("sub.txt"), caller)], send=["atlas.txt"], **on_host)
    assert (text, atlas, there) == ("subject", "atlas", [])
    # Read from the copy in the run directory, in the shared directory on the host.
    shared = isolated_cluster_host.home / on_host["shared_dir"]
    relative = Path(path).relative_to(shared)
    assert relative.parts[1] == "staged" and path.endswith(str(tmp_path / "sub.txt"))


def who(value: Any) -> tuple[str, str, Any]:
    return socket.gethostname(), getpass.getuser(), value


def test_a_workflow_runs_as_dependent_jobs_on_the_host(
        isolated_cluster_host: IsolatedLoginHost, on_host: dict[str, Any]) -> None:
    host = isolated_cluster_host
    options = {k: v for k, v in on_host.items() if k not in ("mode", "progress")}
    wf = Workflow("on the login host")
    top = wf.add_step(who, 1)
    left = wf.add_step(who, Result(top)[2])
    right = wf.add_step(who, Result(top)[2], prerequisites=[top])
    bottom = wf.add_step(who, [Result(left)[2], Result(right)[2]], prerequisites=[left, right])
    report = wf.run("cluster", **options)
    assert report.ok, report
    assert report.value(bottom) == (host.hostname, host.user, [1, 1])
    assert report.value(left)[:2] == (host.hostname, host.user)


def test_the_hosts_slurm_runs_inside_the_host_only(
        isolated_cluster_host: IsolatedLoginHost) -> None:
    """Its daemons are in the host's namespaces (so the host's teardown, or the next session's
    clean-up after a kill, ends them with the namespace), and its files are not here."""
    host = isolated_cluster_host
    server = host.host.server
    assert server is not None and server.pid is not None
    daemons = host.slurm.pids()
    assert sorted(daemons) == ["mariadbd", "munged", "slurmctld", "slurmd", "slurmdbd"]
    for kind in ("net", "mnt", "uts"):
        theirs = {os.readlink(f"/proc/{pid}/ns/{kind}") for pid in daemons.values()}
        assert theirs == {os.readlink(f"/proc/{server.pid}/ns/{kind}")}
        assert os.readlink(f"/proc/self/ns/{kind}") not in theirs
    assert not os.path.lexists(host.slurm_conf)
    assert host.as_root(["cat", host.slurm_conf]).startswith("ClusterName=")


_HOLD_A_HOST = """
import json, sys, time
from pathlib import Path
from tests.infra.host_slurm import IsolatedClusterHost
host = IsolatedClusterHost(Path(sys.argv[1]), cpus=2).start()
print(json.dumps({"pids": [host.server.pid, *host.slurm.pids().values()],
                  "namespaces": [host.client_ns, host.host_ns]}), flush=True)
time.sleep(600)
"""


def test_a_killed_test_process_leaves_no_daemon_after_the_next_start(
        isolated_cluster_host: IsolatedLoginHost) -> None:
    """SIGKILL gives no chance to stop the host's SLURM: the next start's reaper ends its
    daemons with the host's network namespace."""
    left = hold_then_kill(_HOLD_A_HOST, isolated_cluster_host.host.venv)
    assert len(left["pids"]) == 6 and all(map(_running, left["pids"]))  # orphaned, running
    cleanup_stale_netns()
    deadline = time.monotonic() + 10  # SIGKILL takes effect soon, not at once
    while any(map(_running, left["pids"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in left["pids"] if _running(pid)]
    assert not set(left["namespaces"]) & set(_netns_names())
    # Another session's host and SLURM are untouched (its user still submits there).
    conf = shlex.quote(isolated_cluster_host.slurm_conf)
    seen = isolated_cluster_host.ssh(f"SLURM_CONF={conf} sinfo -h -o %P:%a").stdout.split()
    assert seen == ["debug*:up", "short:up", "held:down"], seen
