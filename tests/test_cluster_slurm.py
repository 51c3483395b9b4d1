"""Mode ``cluster`` on a real single-node SLURM started by the tests (tests/infra/slurm.py), and
through a real loopback sshd as the submitting host.

The one walltime test waits for SLURM to kill a job (limits are whole minutes, enforced about
every 30 s): it is submitted, detached, by the first test of the file and collected by a test
marked ``run_last`` (tests/conftest.py moves it to the end of the session), so the minute
passes while the rest of the suite runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, remote_map
from remotemap.backends.cluster import ClusterError, collect, list_runs, submit
from remotemap.backends.cluster.registry import entry_path, registered
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import (
    env_for_children,
    no_engine_left,
    round_status,
    slurm_options,
    wait_for,
)
from tests.infra.slurm import SingleNodeSlurm

# The shared fixtures, module-scoped per test module (see tests/cluster_support.py).
state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
slurm = cluster_support.slurm


# -- the one slow test, first half: submitted now, collected at the end ------------------------
@pytest.fixture(scope="session")
def walltime_run(slurm_cluster: SingleNodeSlurm,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The run id and its registry ($XDG_STATE_HOME). Session-scoped: its second half runs
    last in the session, after this module's own registry (``state_home``) is gone."""
    # One job of two tasks and a 1-minute walltime: task 0 outlives it, task 1 never starts
    # in that job and goes to a second round, where it runs.
    def submit_it(runs: Path) -> str:
        return submit(tf.pid_and_sleep, [(str(runs / "wall"), 0, 300.0),
                                         (str(runs / "wall"), 1, 0.0)],
                      walltime="1", tasks_per_job=2, **slurm_options(slurm_cluster, runs))

    yield from cluster_support.detached_run(tmp_path_factory, "walltime", submit_it)


@pytest.mark.slurm
@pytest.mark.slow
def test_walltime_run_is_submitted_detached(walltime_run: tuple[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, home = walltime_run
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    entry = next(e for e in registered() if e["run_id"] == run_id)
    assert entry["detached"] is True and entry["settings"]["walltime"] == "1"
    spec = json.loads((Path(entry["root"]) / "rounds" / "0.json").read_text())
    assert spec["native"] == ["--time=1"] and spec["jobs"] == [[0, 1]]


# -- SLURM -----------------------------------------------------------------------------------------
@pytest.mark.slurm
def test_slurm_map_and_failures(slurm: dict[str, Any], runs_dir: Path) -> None:
    def task(x: int) -> str:
        if x == 1:
            os.write(2, b"leaving with 7\n")
            os._exit(7)
        if x == 2:
            tf.crash_on(3, "segfault")
        if x == 3:
            raise ValueError("three")
        return os.environ["SLURM_JOB_ID"]

    with pytest.raises(RemoteException) as info:
        remote_map(task, [(i,) for i in range(6)], tasks_per_job=1, **slurm)
    exc = info.value
    job_ids = [exc.results[i] for i in (0, 4, 5)]
    assert all(j.isdigit() for j in job_ids) and len(set(job_ids)) == 3  # one job per task
    exit7, segv, error = exc.failures
    assert exit7.kind == "crash" and "exited with code 7" in exit7.message
    assert re.search(r"slurm job \d+ .*exit value 7.*slurm state FAILED, node localhost",
                     exit7.message)
    assert "leaving with 7" in exit7.traceback and "srun:" not in exit7.traceback
    assert segv.kind == "crash" and "SIGSEGV" in segv.message and "signal 11" in segv.message
    assert error.kind == "exception" and error.message == "three"
    no_engine_left(runs_dir)


@pytest.mark.slurm
def test_scancel_is_reported_as_cancelled(slurm: dict[str, Any], slurm_cluster: SingleNodeSlurm,
                                          tmp_path: Path) -> None:
    marker = tmp_path / "job-id"
    cancelled: list[str] = []

    def task(path: str) -> None:
        Path(path + ".tmp").write_text(os.environ["SLURM_JOB_ID"])
        os.replace(path + ".tmp", path)
        time.sleep(120)

    def scancel_when_running() -> None:
        job_id = wait_for("the task to start", lambda: marker.exists() and marker.read_text())
        slurm_cluster.run(["scancel", job_id])
        cancelled.append(job_id)

    thread = threading.Thread(target=scancel_when_running)
    thread.start()
    try:
        with pytest.raises(RemoteException) as info:
            remote_map(task, [(str(marker),)], **slurm)
    finally:
        thread.join()
    failure = info.value.failures[0]
    assert failure.kind == "cancelled", failure.message
    assert f"slurm job {cancelled[0]} " in failure.message and "CANCELLED" in failure.message


@pytest.mark.slurm
def test_unknown_partition_names_the_option(slurm: dict[str, Any]) -> None:
    # Refused before anything is made (cluster.limits), naming the partitions there are.
    with pytest.raises(ClusterError, match=r"cluster\.queue: partition 'nope' does not exist "
                                           r"on localhost \(its partitions: debug, short, held"):
        remote_map(tf.square, [(1,)], queue="nope", **slurm)
    # An option only sbatch can judge: its own message, through sbatch --test-only.
    with pytest.raises(ClusterError) as info:
        remote_map(tf.square, [(1,)], native_options=["--constraint=gpu"], **slurm)
    assert "cluster.native_options (--constraint=gpu) was refused by SLURM" in str(info.value)
    assert "Invalid feature specification" in str(info.value)


@pytest.mark.slurm
def test_detached_run_status_and_collect_from_other_processes(
        slurm: dict[str, Any], state_home: Path, tmp_path: Path) -> None:
    env = env_for_children(state_home)
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    code = ("from remotemap.backends.cluster import submit\n"
            "from tests import taskfuncs as tf\n"
            f"print(submit(tf.foo, [(i,) for i in range(12)], tasks_per_job=3, **{options!r}))\n")
    began = time.monotonic()
    sub = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    run_id = sub.stdout.strip()
    assert time.monotonic() - began < 10  # returns at once, the jobs run without it
    listed = [r for r in list_runs() if r["run_id"] == run_id]
    assert listed and listed[0]["detached"] and listed[0]["n_tasks"] == 12
    status = subprocess.run([sys.executable, "-m", "remotemap", "status"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert re.search(rf"{run_id}  slurm via localhost.*\n.*jobs: ", status.stdout)
    out = subprocess.run([sys.executable, "-m", "remotemap", "collect", run_id, "--remove"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{i}\t{i + 2}" for i in range(12)]
    assert all(e["run_id"] != run_id for e in registered())


@pytest.mark.slurm
def test_dead_engine_is_replaced_and_adopts_the_jobs(slurm: dict[str, Any],
                                                     tmp_path: Path) -> None:
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, i, 3.0) for i in range(4)], tasks_per_job=1,
                    **options)
    entry = next(e for e in registered() if e["run_id"] == run_id)
    run_dir = Path(entry["root"])

    def submitted() -> dict[str, Any] | None:
        if not (run_dir / "rounds" / "0.status.json").exists():
            return None
        status = round_status(run_dir)
        jobs = status.get("jobs") or []
        return status if jobs and all(j.get("drms") for j in jobs) else None

    status = wait_for("jobs submitted", submitted)
    os.kill(status["pid"], signal.SIGKILL)  # the engine dies; its SLURM jobs do not
    assert collect(run_id, timeout=120, remove=False) == [0, 1, 2, 3]
    final = wait_for("the new engine to finish", lambda: (
        round_status(run_dir) if round_status(run_dir).get("exited") else None))
    assert final["adopted"] == 1 and final["state"] == "done"
    assert final["pid"] != status["pid"]
    # Adopted, not resubmitted: the same SLURM job ids, each task ran once.
    assert [j["drms"] for j in final["jobs"]] == [j["drms"] for j in status["jobs"]]
    assert collect(run_id, remove=True) == [0, 1, 2, 3]


@pytest.mark.slurm
def test_cancel_a_detached_run(slurm: dict[str, Any], slurm_cluster: SingleNodeSlurm,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, i, 120.0) for i in range(3)], tasks_per_job=1,
                    **options)
    wait_for("a task to start", lambda: list(tmp_path.glob("t.[0-9]")))
    cluster_support.cancel_from_the_cli(slurm_cluster, run_id, 3, capsys)


# -- a remote submitting host over SSH ------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.ssh
def test_remote_submitting_host_over_ssh(swf: None, slurm_cluster: SingleNodeSlurm,
                                         sshd_host: Any, rmtest_can_submit: Path) -> None:
    def task(x: int) -> tuple[int, str, str]:
        import getpass

        if x == 3:
            raise ArithmeticError("three")
        return x * 2, getpass.getuser(), os.environ["SLURM_JOB_ID"]

    options = {"mode": "cluster", "scheduler": "slurm", "host": sshd_host.alias,
               "ssh_config": str(sshd_host.ssh_config), "python": str(rmtest_can_submit),
               "slurm_conf": str(slurm_cluster.conf_path), "poll_interval": 0.5,
               "shared_dir": ".cache/remotemap/cluster-test", "tasks_per_job": 2,
               "progress": False}
    with pytest.raises(RemoteException) as info:
        remote_map(task, [(i,) for i in range(6)], **options)
    exc = info.value
    assert exc.failed_indices == [3] and exc.failures[0].message == "three"
    values = [r for r in exc.results if r is not None]
    assert [v[0] for v in values] == [0, 2, 4, 8, 10]
    assert {v[1] for v in values} == {"rmtest"}  # ran as the SSH user, through its SLURM jobs
    assert len({v[2] for v in values}) == 3  # 6 tasks, 2 a job
    home_runs = Path(sshd_host.user.home) / ".cache/remotemap/cluster-test"
    assert list(home_runs.iterdir()) == []  # the run directory was removed over SSH


def test_run_last_tests_are_the_sessions_last(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    # Selected with the walltime test (the whole suite), this one is not last: the order moved.
    last = [item for item in items if item.get_closest_marker("run_last")]
    assert items[len(items) - len(last):] == last


# -- the one slow test, second half: at the end of the session ---------------------------------
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.run_last
def test_walltime_exceeded_is_a_timeout(walltime_run: tuple[str, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, home = walltime_run
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    with pytest.raises(RemoteException) as info:
        collect(run_id, timeout=240, remove=True)
    exc = info.value
    assert exc.failed_indices == [0] and exc.results == [None, 1]
    failure = exc.failures[0]
    assert failure.kind == "timeout" and "walltime" in failure.message
    assert "slurm state TIMEOUT" in failure.message
    assert not entry_path(run_id).exists()
