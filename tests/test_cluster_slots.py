"""Worker jobs of several slots (``cluster.worker_slots``, ``remotemap/pilot_slots.py``) on a
real single-node SLURM (tests/infra/slurm.py, 16 CPUs): results, one outcome per chunk, a
claim loop killed while its job lives, a whole job killed.

Speed is not asserted here: benchmarks/peers_slurm.py measures it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.backends.cluster import collect, layout, submit
from remotemap.backends.cluster.registry import registered
from remotemap.pilot import marker_slot, parse_marker
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import round_status, wait_for
from tests.infra.slurm import SingleNodeSlurm

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
slurm = cluster_support.slurm
run_root = cluster_support.run_root


def where_square(counter_dir: str, x: int) -> tuple[int, str, int, int]:
    """x * x, and where it ran: the SLURM job, the loop's process and its parent."""
    tf.count_runs(counter_dir, x)
    time.sleep(0.05)
    return x * x, os.environ["SLURM_JOB_ID"], os.getpid(), os.getppid()


@pytest.mark.slurm
def test_automatic_slots_give_serial_results_each_chunk_once(
        slurm: dict[str, Any], tmp_path: Path) -> None:
    n = 150
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    run_id = submit(where_square, [(str(tmp_path), i) for i in range(n)],
                    dispatch="workers", **options)  # worker_jobs, worker_slots automatic
    root = run_root(run_id)
    spec = json.loads((root / "rounds" / "0.json").read_text())
    assert (len(spec["jobs"]), spec["slots"]) == (2, 8)
    assert "--cpus-per-task=8" in spec["native"]
    assert spec["canary"] is False  # no caller to stop at a failure: nothing held back
    results = collect(run_id, timeout=180, remove=False)
    assert [r[0] for r in results] == [i * i for i in range(n)]
    assert len({r[1] for r in results}) <= 2  # two SLURM jobs ...
    loops = {(r[1], r[2]) for r in results}
    assert len(loops) > 2  # ... whose tasks ran in several loops each
    assert all(r[3] != r[2] for r in results)  # in forked loops, not the job's process
    ran = Counter(int(p.name.split(".")[0]) for p in tmp_path.iterdir())
    assert ran == dict.fromkeys(range(n), 1)  # every task ran exactly once
    assert sorted(p.name for p in (root / "outcomes").iterdir()) == \
        [f"{i:06d}.pkl" for i in range(n)]
    claims = [p.name for p in (root / "claimed").iterdir()]
    parsed = [parse_marker(c) for c in claims]
    assert sorted(p[1] for p in parsed if p is not None) == list(range(n))
    assert {marker_slot(c) for c in claims} <= set(range(8))
    assert all(marker_slot(c) is not None for c in claims)
    status = wait_for("the engine to exit", lambda: (
        round_status(root) if round_status(root).get("exited") else None))
    assert len(status["jobs"]) == 2 and status["state"] == "done"
    assert collect(run_id, remove=True) == results


def first_run_sleeps(marker: str, x: int) -> int:
    """Task 0 writes its loop's pid and the job's (the loop's parent) and sleeps the first
    time it runs, so the test can kill either; it returns at once when run again. The other
    tasks take a moment, so every loop is mid-chunk when the kill comes."""
    if x == 0 and not os.path.exists(marker):
        Path(f"{marker}.tmp").write_text(f"{os.getpid()} {os.getppid()}")
        os.replace(f"{marker}.tmp", marker)
        time.sleep(120)
    time.sleep(0.3)
    return x * x


def _run_and_kill(slurm: dict[str, Any], tmp_path: Path, which: int
                  ) -> tuple[list[int], dict[str, Any], list[int], str]:
    """Run 16 tasks in one worker job of 4 slots; once task 0 runs, SIGKILL its loop
    (``which`` 0) or the job's process (1). The results, the round's status, the pid killed,
    the first job's stderr."""
    marker = tmp_path / "pids"
    killed: list[int] = []
    before = {e["run_id"] for e in registered()}

    def kill() -> None:
        pids = wait_for("task 0 to start", lambda: marker.exists() and marker.read_text())
        pid = int(pids.split()[which])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=kill)
    thread.start()
    try:
        results = remote_map(first_run_sleeps, [(str(marker), i) for i in range(16)],
                             dispatch="workers", worker_jobs=1, worker_slots=4,
                             keep_files=True, **slurm)
    finally:
        thread.join()
    (entry,) = [e for e in registered() if e["run_id"] not in before]
    root = Path(entry["root"])
    stderr = (root / layout.job_log_name(0, 0, "err")).read_text()
    return results, round_status(root), killed, stderr


@pytest.mark.slurm
def test_a_killed_loop_loses_only_its_chunk(slurm: dict[str, Any], tmp_path: Path) -> None:
    results, status, killed, stderr = _run_and_kill(slurm, tmp_path, 0)
    assert killed and results == [i * i for i in range(16)]
    assert f"(pid {killed[0]}) ended with signal SIGKILL" in stderr
    assert "back in the queue: [0]" in stderr  # the chunk of task 0 (file 0), and only it
    # The job's own process gave the chunk back and went on: no other worker job was needed.
    assert len(status["jobs"]) == 1
    assert status["jobs"][0]["exit_status"] == "finished_regularly"
    assert status["jobs"][0]["exit_value"] == 0


@pytest.mark.slurm
def test_a_killed_job_gives_back_every_loops_chunk(slurm: dict[str, Any],
                                                   tmp_path: Path) -> None:
    results, status, killed, stderr = _run_and_kill(slurm, tmp_path, 1)
    assert killed and results == [i * i for i in range(16)]
    # The job died with its loops (each mid-chunk); the engine gave their chunks back and
    # started another worker job for them.
    assert len(status["jobs"]) == 2 and "ended with" not in stderr
    assert status["jobs"][0]["exit_status"] != "finished_regularly" or \
        status["jobs"][0]["exit_value"] != 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slurm
def test_cancel_stops_the_job_and_all_its_loops(slurm: dict[str, Any],
                                                slurm_cluster: SingleNodeSlurm,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, i, 120.0) for i in range(6)],
                    dispatch="workers", worker_jobs=1, worker_slots=3, **options)
    wait_for("the three loops to run a task", lambda: len(list(tmp_path.glob("t.[0-9]"))) == 3)
    loops = [int(p.read_text()) for p in tmp_path.glob("t.[0-9]")]
    assert len(set(loops)) == 3 and all(_alive(pid) for pid in loops)
    cluster_support.cancel_from_the_cli(slurm_cluster, run_id, 6, capsys)
    wait_for("every loop to end", lambda: not any(_alive(pid) for pid in loops), 30)


@pytest.mark.slurm
def test_a_task_that_kills_its_loop_every_time_fails_alone(slurm: dict[str, Any]) -> None:
    from remotemap import RemoteException

    with pytest.raises(RemoteException) as info:
        remote_map(tf.crash_on, [(i,) for i in range(40)], dispatch="workers", **slurm)
    (failure,) = info.value.failures
    assert failure.index == 3 and failure.kind == "lost"
    # Its second death (a loop of the job that claimed it last) tells which loop died of it,
    # and that the chunk was left to fail; every other task of that job went on.
    assert "ended with exit status 3" in failure.traceback
    assert "left to fail: [3]" in failure.traceback
    assert [r for i, r in enumerate(info.value.results) if i != 3] == \
        [i for i in range(40) if i != 3]
