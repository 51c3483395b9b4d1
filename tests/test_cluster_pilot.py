"""``cluster.dispatch = "workers"`` on a real single-node SLURM (tests/infra/slurm.py): worker
jobs that claim chunks from the run's queue (``remotemap.pilot``), a worker killed mid-chunk,
a worker that stops claiming before its walltime, and ``remotemap cancel``.

Speed is not asserted here: benchmarks/pilot.py measures it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.backends.cluster import collect, submit
from remotemap.backends.cluster.registry import registered
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import no_engine_left, round_status, wait_for
from tests.infra.slurm import SingleNodeSlurm

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
slurm = cluster_support.slurm
run_root = cluster_support.run_root


def job_and_square(counter_dir: str, x: int) -> tuple[int, str]:
    tf.count_runs(counter_dir, x)
    return x * x, os.environ["SLURM_JOB_ID"]


@pytest.mark.slurm
def test_workers_give_serial_results_each_task_once(slurm: dict[str, Any], runs_dir: Path,
                                                    tmp_path: Path) -> None:
    n = 150
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    run_id = submit(job_and_square, [(str(tmp_path), i) for i in range(n)],
                    dispatch="workers", worker_jobs=3, **options)
    root = run_root(run_id)
    results = collect(run_id, timeout=180, remove=False)
    assert [r[0] for r in results] == [i * i for i in range(n)]
    assert 1 <= len({r[1] for r in results}) <= 3  # pulled by at most the three worker jobs
    ran = Counter(int(p.name.split(".")[0]) for p in tmp_path.iterdir())
    assert ran == dict.fromkeys(range(n), 1)  # every task ran exactly once
    # One outcome per chunk file, each claimed once, nothing left in the queue.
    assert sorted(p.name for p in (root / "outcomes").iterdir()) == \
        [f"{i:06d}.pkl" for i in range(n)]
    claimed = sorted(p.name.rsplit(".", 1)[0] for p in (root / "claimed").iterdir())
    assert claimed == [f"0-{i:06d}.0" for i in range(n)]
    assert list((root / "queue").iterdir()) == []
    status = wait_for("the engine to exit", lambda: (
        round_status(root) if round_status(root).get("exited") else None))
    assert len(status["jobs"]) == 3 and status["state"] == "done"
    assert collect(run_id, remove=True) == results
    no_engine_left(runs_dir)


def sleep_once_then_square(marker: str, x: int) -> int:
    """Task 0 writes its process's pid (the worker's) and sleeps the first time it runs, so
    the test can kill that worker; it returns at once when run again."""
    if x == 0 and not os.path.exists(marker):
        Path(f"{marker}.tmp").write_text(str(os.getpid()))
        os.replace(f"{marker}.tmp", marker)
        time.sleep(120)
    time.sleep(0.2)
    return x * x


@pytest.mark.slurm
def test_killed_worker_loses_only_its_chunk(slurm: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    killed: list[int] = []

    def kill_worker() -> None:
        pid = int(wait_for("task 0 to start", lambda: marker.exists() and marker.read_text()))
        os.kill(pid, signal.SIGKILL)  # the worker job's own process, mid-chunk
        killed.append(pid)

    thread = threading.Thread(target=kill_worker)
    thread.start()
    try:
        results = remote_map(sleep_once_then_square, [(str(marker), i) for i in range(12)],
                             dispatch="workers", worker_jobs=2, **slurm)
    finally:
        thread.join()
    assert killed and results == [i * i for i in range(12)]


# -- the walltime test: submitted by the first test here, collected at the session's end --------
@pytest.fixture(scope="session")
def pilot_walltime_run(slurm_cluster: SingleNodeSlurm, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[tuple[str, Path]]:
    """The run id and its registry ($XDG_STATE_HOME). Its tasks take over a minute of SLURM
    time, so the test collecting it is marked ``run_last`` (tests/conftest.py) and the wait
    passes while the rest of the suite runs."""
    # A 1-minute walltime and tasks of 25 s: after one task a worker has about 34 s left, less
    # than 25 s x 1.5 + 10 s, so it exits; the engine submits a worker for the third task.
    def submit_it(runs: Path) -> str:
        return submit(tf.pid_and_sleep, [(str(runs / "t"), i, 25.0) for i in range(3)],
                      walltime="1", dispatch="workers", worker_jobs=2,
                      **cluster_support.slurm_options(slurm_cluster, runs))

    yield from cluster_support.detached_run(tmp_path_factory, "pilot-walltime", submit_it)


@pytest.mark.slurm
def test_walltime_workers_run_is_submitted(pilot_walltime_run: tuple[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, home = pilot_walltime_run
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    entry = next(e for e in registered() if e["run_id"] == run_id)
    spec = json.loads((Path(entry["root"]) / "rounds" / "0.json").read_text())
    assert spec["dispatch"] == "workers" and spec["native"] == ["--time=1"]


@pytest.mark.slurm
@pytest.mark.run_last
def test_worker_stops_claiming_before_its_walltime(pilot_walltime_run: tuple[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, home = pilot_walltime_run
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    root = run_root(run_id)
    assert collect(run_id, timeout=240, remove=False) == [0, 1, 2]
    status = wait_for("the engine to exit", lambda: (
        round_status(root) if round_status(root).get("exited") else None))
    assert len(status["jobs"]) == 3  # two workers, then one more for the third task
    assert all(j["exit_status"] == "finished_regularly" and j["exit_value"] == 0
               for j in status["jobs"])  # none was killed by its walltime
    collect(run_id, remove=True)


@pytest.mark.slurm
def test_cancel_stops_the_worker_jobs(slurm: dict[str, Any], slurm_cluster: SingleNodeSlurm,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, i, 120.0) for i in range(6)],
                    dispatch="workers", worker_jobs=2, **options)
    wait_for("both workers to run a task", lambda: len(list(tmp_path.glob("t.[0-9]"))) == 2)
    cluster_support.cancel_from_the_cli(slurm_cluster, run_id, 6, capsys)


def _pending_workers(cluster: SingleNodeSlurm, run_id: str) -> list[str]:
    rows = cluster.run(["squeue", "-h", "-t", "PD", "-o", "%i %j"]).stdout.split("\n")
    return [row.split()[0] for row in rows if f"rm-{run_id}-" in row]


@pytest.mark.slurm
def test_workers_still_queued_when_the_queue_empties_are_dropped(
        slurm: dict[str, Any], slurm_cluster: SingleNodeSlurm,
        caplog: pytest.LogCaptureFixture) -> None:
    # A busy cluster: a job holds all but two free CPUs, so two of the four worker jobs start
    # and the other two wait, held (`scontrol hold`: they would never start). Once the two
    # running have emptied the queue, the engine drops the two waiting ones: the call returns
    # with every result, instead of waiting for them (and giving up after close's timeout,
    # keeping the run).
    before = {e["run_id"] for e in registered()}
    idle = int(slurm_cluster.run(["sinfo", "-h", "-o", "%C"]).stdout.split("/")[1])
    blocker = slurm_cluster.sbatch(f"--cpus-per-task={idle - 2}", "--wrap", "sleep 300")
    outcome: list[Any] = []

    def call() -> None:
        with caplog.at_level("WARNING", logger="remotemap"):
            outcome.append(remote_map(tf.sleep_for, [(i, 2.0) for i in range(8)],
                                      dispatch="workers", worker_jobs=4, keep_files=True,
                                      **slurm))

    thread = threading.Thread(target=call)
    try:
        wait_for("the blocking job to run", lambda: slurm_cluster.run(
            ["squeue", "-h", "-j", blocker, "-o", "%T"]).stdout.strip() == "RUNNING")
        thread.start()
        run_id = wait_for("the run", lambda: next(
            (e["run_id"] for e in registered() if e["run_id"] not in before), None))
        waiting = wait_for("two workers waiting", lambda: (
            pending if len(pending := _pending_workers(slurm_cluster, run_id)) == 2 else None))
        slurm_cluster.run(["scontrol", "hold", *waiting])
        thread.join(timeout=150)
        assert outcome == [list(range(8))]
        assert not [r for r in caplog.records if "did not all stop" in r.getMessage()]
        status = round_status(run_root(run_id))
        assert status["state"] == "done" and len(status["pilot_stopped"]) == 2
        assert _pending_workers(slurm_cluster, run_id) == []
    finally:
        slurm_cluster.run(["scancel", blocker], check=False)
        thread.join()
