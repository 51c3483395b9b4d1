"""The worker jobs' queue (``remotemap.pilot``) on a real directory, without a scheduler:
atomic claims (also by several processes at once), the requeue of a dead worker's claims,
the adaptive claim size, the walltime rule, and how ``dispatch = "auto"`` chooses. The last
test runs worker jobs end to end through soma-workflow's local scheduler."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.backends.cluster import layout
from remotemap.backends.cluster.settings import (
    cluster_settings,
    dispatch,
    round_spec,
    worker_layout,
)
from remotemap.pilot import (
    CLAIMED,
    END_MARGIN,
    MAX_CLAIMS,
    QUEUE,
    TIME_SAFETY,
    PilotOptions,
    PilotQueue,
    Sizer,
    job_end_time,
    marker_slot,
    parse_marker,
    queue_marker,
    spec_name,
)
from tests import cluster_support
from tests import taskfuncs as tf

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
local = cluster_support.local


def make_queue(root: Path, rnd: int, files: range) -> PilotQueue:
    for sub in (QUEUE, CLAIMED, layout.ROUNDS):
        (root / sub).mkdir(exist_ok=True)
    for file in files:
        (root / queue_marker(rnd, file)).touch()
    return PilotQueue(str(root), rnd)


def test_layout_names_the_pilot_directories() -> None:
    assert (layout.QUEUE, layout.CLAIMED) == (QUEUE, CLAIMED)
    assert {QUEUE, CLAIMED} <= set(layout.SUBDIRS)
    assert spec_name(3) == layout.spec_name(3)  # where a worker job reads its slots


def test_markers_round_trip() -> None:
    assert queue_marker(3, 7, 1) == "queue/3-000007.1"
    assert parse_marker("3-000007.1") == (3, 7, 1, None)
    assert parse_marker("3-000007.1.12") == (3, 7, 1, 12)
    assert parse_marker("3-000007.1.12.5") == (3, 7, 1, 12)  # loop 5 of job 12: job 12's
    assert (marker_slot("3-000007.1.12.5"), marker_slot("3-000007.1.12")) == (5, None)
    assert marker_slot("3-000007.1.12.x") is None
    for name in ("3-000007", "x-000007.1", "3-000007.1.tmp-55", "000007.pkl"):
        assert parse_marker(name) is None


def test_claim_renames_only_this_rounds_markers(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, 0, range(5))
    make_queue(tmp_path, 1, range(5, 7))  # another round's queue, in the same directory
    seen: list[int] = []

    def two(waiting: int) -> int:
        seen.append(waiting)
        return 2

    assert queue.claim(4, two) == [0, 1]
    assert seen == [5]  # size() is told how many of this round's chunks wait
    assert sorted(os.listdir(tmp_path / CLAIMED)) == ["0-000000.0.4", "0-000001.0.4"]
    assert queue.waiting() == [2, 3, 4]
    assert PilotQueue(str(tmp_path), 1).waiting() == [5, 6]
    assert queue.claim(4, lambda waiting: 0) == []  # size 0: the worker stops
    assert queue.claims() == {0: (1, 4), 1: (1, 4)}


def test_claim_through_a_directory_descriptor(tmp_path: Path) -> None:
    make_queue(tmp_path, 2, range(3))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        queue = PilotQueue("/nonexistent/only/for/messages", 2, fd)
        assert queue.claim(0, lambda waiting: 5) == [0, 1, 2]
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path / CLAIMED)) == [f"2-00000{i}.0.0" for i in range(3)]


def _claim_all(root: str, job: int, out: Any) -> None:
    queue = PilotQueue(root, 0)
    mine: list[int] = []
    while files := queue.claim(job, lambda waiting: 1):
        mine += files
    out.put((job, mine))


def test_concurrent_workers_claim_each_chunk_once(tmp_path: Path) -> None:
    make_queue(tmp_path, 0, range(300))
    out: Any = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_claim_all,
                                                         args=(str(tmp_path), j, out))
             for j in range(4)]
    for proc in procs:
        proc.start()
    claimed = dict(out.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    every = sorted(f for files in claimed.values() for f in files)
    assert every == list(range(300))  # none twice, none lost
    names = os.listdir(tmp_path / CLAIMED)
    assert len(names) == 300 and all(
        int(n.rsplit(".", 1)[1]) in claimed and int(n[2:8]) in claimed[int(n.rsplit(".", 1)[1])]
        for n in names)


def test_requeue_gives_back_only_a_dead_workers_unfinished_claims(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, 0, range(4))
    assert queue.claim(1, lambda waiting: 2) == [0, 1]
    assert queue.claim(2, lambda waiting: 1) == [2]
    done = {0}  # file 0 has its outcome
    back, kept = queue.requeue({1}, lambda file: file in done)
    assert (back, kept) == ([1], [])
    assert queue.waiting() == [1, 3] and (tmp_path / queue_marker(0, 1, 1)).exists()
    assert queue.requeue({1}, lambda file: file in done) == ([], [])  # nothing more of job 1
    # Claimed again and its worker died again: MAX_CLAIMS reached, it stays claimed.
    assert MAX_CLAIMS == 2
    assert queue.claim(3, lambda waiting: 1) == [1]
    assert queue.requeue({3}, lambda file: file in done) == ([], [1])
    assert queue.claims()[1] == (2, 3) and queue.waiting() == [3]


def test_requeue_of_one_loop_leaves_its_jobs_other_loops(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, 0, range(6))
    assert queue.claim(1, lambda waiting: 2, slot=0) == [0, 1]
    assert queue.claim(1, lambda waiting: 1, slot=1) == [2]
    assert queue.claim(2, lambda waiting: 1, slot=1) == [3]  # another job's loop 1
    assert sorted(os.listdir(tmp_path / CLAIMED)) == [
        "0-000000.0.1.0", "0-000001.0.1.0", "0-000002.0.1.1", "0-000003.0.2.1"]
    assert queue.claims() == {0: (1, 1), 1: (1, 1), 2: (1, 1), 3: (1, 2)}
    # Loop 1 of job 1 died while its job lives: the job gives back that loop's claim only.
    assert queue.requeue({1}, lambda file: False, slot=1) == ([2], [])
    assert queue.waiting() == [2, 4, 5] and (tmp_path / queue_marker(0, 2, 1)).exists()
    # Then the whole job ended: the engine gives back what its other loop left undone.
    assert queue.requeue({1}, lambda file: file == 0) == ([1], [])
    assert queue.waiting() == [1, 2, 4, 5]
    assert os.listdir(tmp_path / CLAIMED).count("0-000003.0.2.1") == 1  # job 2's is kept


def test_only_the_claim_a_loop_was_running_counts_when_it_died(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, 0, range(4))
    assert queue.claim(1, lambda waiting: 3, slot=0) == [0, 1, 2]
    # The loop died in file 0 (its first claim without an outcome): 1 and 2 never started.
    assert queue.requeue({1}, lambda file: False, slot=0) == ([0, 1, 2], [])
    assert sorted(os.listdir(tmp_path / QUEUE)) == [
        queue_marker(0, 0, 1).split("/")[1], queue_marker(0, 1, 0).split("/")[1],
        queue_marker(0, 2, 0).split("/")[1], queue_marker(0, 3, 0).split("/")[1]]
    # Claimed together again and file 0 kills the loop again: it is left to fail, and the
    # files claimed with it go back unharmed (before, file 1 failed with it as claimed twice).
    assert queue.claim(1, lambda waiting: 3, slot=0) == [0, 1, 2]
    assert queue.requeue({1}, lambda file: False, slot=0) == ([1, 2], [0])
    assert queue.claims()[0] == (MAX_CLAIMS, 1)
    assert queue.waiting() == [1, 2, 3] and (tmp_path / queue_marker(0, 1, 0)).exists()


def test_worker_layout_rule() -> None:
    slurm = cluster_settings({"scheduler": "slurm"})
    assert worker_layout(slurm, 1000) == (2, 8)  # 16 loops in 2 jobs, as dask-jobqueue's 2 x 8
    assert worker_layout(slurm, 16) == (2, 8)
    assert worker_layout(slurm, 12) == (2, 6)  # never more loops than tasks
    assert worker_layout(slurm, 5) == (1, 5)
    assert worker_layout({**slurm, "worker_jobs": 3}, 1000) == (3, 1)  # as before slots
    assert worker_layout({**slurm, "worker_slots": 4}, 1000) == (4, 4)
    assert worker_layout({**slurm, "worker_slots": 4}, 6) == (2, 3)
    assert worker_layout({**slurm, "worker_jobs": 3, "worker_slots": 2}, 1000) == (3, 2)
    assert worker_layout({**slurm, "worker_jobs": 3, "worker_slots": 2}, 2) == (2, 1)
    files = [(i, i) for i in range(40)]
    spec = round_spec({**slurm, "cpus_per_task": 2, "walltime": "5"}, run_id="r", number=0,
                      files=files, env={}, task_timeout=None, function="f")
    assert (len(spec["jobs"]), spec["slots"], spec["workers"]) == (2, 8, 2)
    assert spec["native"] == ["--time=5", "--cpus-per-task=16"]  # 8 slots x 2 CPUs
    assert spec["native_keys"] == ["cluster.walltime", "cluster.worker_slots"]
    jobs = round_spec({**slurm, "dispatch": "jobs", "cpus_per_task": 2}, run_id="r",
                      number=0, files=files, env={}, task_timeout=None, function="f")
    assert jobs["native"] == ["--cpus-per-task=2"] and jobs["slots"] == 1
    pbs = round_spec({**slurm, "scheduler": "pbspro", "dispatch": "workers"}, run_id="r",
                     number=0, files=files, env={}, task_timeout=None, function="f")
    assert pbs["native"] == ["-l ncpus=8"]


def test_sizer_starts_small_then_aims_at_the_target_and_shares() -> None:
    sizer = Sizer(workers=4, target=2.0)
    assert sizer.size(1000, None) == 1  # nothing measured yet
    for _ in range(10):
        sizer.add(0.1)
    assert sizer.size(1000, None) == 20  # 2 s of 0.1 s tasks
    assert sizer.size(12, None) == 3  # never more than a fair share: 12 chunks, 4 workers
    assert sizer.size(1, None) == 1
    slow = Sizer(workers=2, target=2.0)
    slow.add(30.0)
    assert slow.size(100, None) == 1  # long tasks: one at a time


def test_sizer_respects_the_jobs_end() -> None:
    sizer = Sizer(workers=1, target=100.0)
    sizer.add(10.0)
    fits = END_MARGIN + 10.0 * TIME_SAFETY * 3
    assert sizer.size(50, fits + 0.1) == 3
    assert sizer.size(50, END_MARGIN + 10.0 * TIME_SAFETY - 0.1) == 0  # stop claiming
    assert sizer.size(50, -5.0) == 0


def test_job_end_time_without_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert job_end_time(60.0, 1000.0) == 1060.0
    assert job_end_time(0.0, 1000.0) is None


def test_pilot_options_name_what_is_wrong() -> None:
    assert PilotOptions.parse(["--round", "2", "--job", "1", "--workers", "4"]) == \
        PilotOptions(2, 1, 4, 0.0, 0)
    assert PilotOptions.parse(["--round", "2", "--job", "1", "--workers", "4",
                               "--slots", "3"]).slots == 3
    with pytest.raises(ValueError, match="--bogus"):
        PilotOptions.parse(["--round", "2", "--job", "1", "--workers", "4", "--bogus", "1"])
    with pytest.raises(ValueError, match="pairs"):
        PilotOptions.parse(["--round"])


def test_auto_dispatch_rule() -> None:
    slurm = cluster_settings({"scheduler": "slurm"})
    assert dispatch(slurm, 33, None) == "workers"
    assert dispatch(slurm, 32, None) == "jobs"  # few tasks: a job each
    assert dispatch(slurm, 1000, 5.0) == "jobs"  # a per-task timeout is enforced per job
    assert dispatch({**slurm, "tasks_per_job": 4}, 1000, None) == "jobs"
    assert dispatch(cluster_settings({}), 1000, None) == "jobs"  # the local scheduler
    assert dispatch({**slurm, "dispatch": "workers"}, 2, None) == "workers"
    assert dispatch({**slurm, "dispatch": "jobs"}, 1000, None) == "jobs"
    spec = round_spec({**slurm, "worker_jobs": 3, "walltime": "2"}, run_id="r", number=0,
                      files=[(i, i) for i in range(40)], env={}, task_timeout=None,
                      function="f")
    assert spec["dispatch"] == "workers" and spec["jobs"] == [[], [], []]
    assert spec["walltime_seconds"] == 120 and spec["workers"] == 3


def test_bad_dispatch_is_refused_naming_the_key() -> None:
    from remotemap.config import load_config

    with pytest.raises(ValueError, match=r"cluster\.dispatch: \"pilots\" is not a valid"):
        load_config(None).settings_for("cluster", {"dispatch": "pilots"})


def test_worker_jobs_on_the_local_scheduler(local: dict[str, Any], tmp_path: Path) -> None:
    results = remote_map(tf.count_runs, [(str(tmp_path), i) for i in range(40)],
                         dispatch="workers", worker_jobs=2, **local)
    assert results == [i * 10 for i in range(40)]
    assert sorted(int(p.name.split(".")[0]) for p in tmp_path.iterdir()) == list(range(40))


def test_worker_slots_on_the_local_scheduler(local: dict[str, Any], tmp_path: Path) -> None:
    # Tasks of 50 ms: trivial ones could all be claimed by the first loop to start.
    results = remote_map(tf.count_runs, [(str(tmp_path), i, "", 0.05) for i in range(40)],
                         dispatch="workers", worker_jobs=2, worker_slots=3, **local)
    assert results == [i * 10 for i in range(40)]
    ran = [p.name.split(".") for p in tmp_path.iterdir()]
    assert sorted(int(x) for x, _, _ in ran) == list(range(40))  # each task once
    assert len({pid for _, pid, _ in ran}) > 2  # in more processes than the two jobs


@pytest.mark.parametrize("on_error, held", [("stop", True), ("continue", False)])
def test_only_a_caller_that_stops_asks_to_hold_the_bulk(on_error: str, held: bool) -> None:
    from remotemap.driver import make_policy

    assert make_policy(on_error, None, 0, 0.0, None).options.stop_on_error is held


def test_a_canary_round_queues_its_first_chunk_only(tmp_path: Path) -> None:
    from remotemap.backends.cluster.settings import queue_markers
    from remotemap.pilot import held_name

    spec = {"dispatch": "workers", "round": 1, "files": [[5, 0], [6, 1], [7, 2]]}
    assert set(queue_markers(spec)) == {queue_marker(1, f) for f in (5, 6, 7)}
    held = queue_markers({**spec, "canary": True})
    assert set(held) == {queue_marker(1, 5), held_name(1)}
    assert queue_markers({**spec, "dispatch": "jobs"}) == []
    queue = make_queue(tmp_path, 1, range(5, 6))
    assert not queue.held()
    (tmp_path / held_name(1)).touch()
    assert queue.held() and queue.waiting() == [5]  # the flag is not a chunk


class _Engine:
    """The part of ``engine.Engine`` the keeper uses, over a real run directory."""

    def __init__(self, root: Path, spec: dict[str, Any]) -> None:
        self.root, self.rnd, self.spec = str(root), 0, spec
        self.status: dict[str, Any] = {"swf_ids": [1, 2]}

    def save(self, **changes: Any) -> None:
        self.status.update(changes)


def _outcome(root: Path, file: int) -> None:
    (root / "outcomes").mkdir(exist_ok=True)
    (root / "outcomes" / f"{file:06d}.pkl").write_bytes(b"sealed elsewhere")


def test_keeper_requeues_a_dead_workers_claim_and_gives_up_on_a_broken_start(
        tmp_path: Path) -> None:
    from remotemap.backends.cluster.pilots import Keeper

    queue = make_queue(tmp_path, 0, range(3))
    engine = _Engine(tmp_path, {"workers": 2, "files": [[f, f] for f in range(3)]})
    keeper = Keeper(engine)
    assert queue.claim(0, lambda waiting: 2) == [0, 1]
    _outcome(tmp_path, 0)
    killed = {"status": "done", "exit_status": "finished_signal", "exit_value": None}
    running = {"status": "running"}
    assert keeper.tick(None, [killed, running]) is False  # worker 1 runs: nothing submitted
    assert queue.waiting() == [1, 2]  # file 1 went back, file 0 had its outcome
    assert engine.status["pilot_claimers"] == [0] and engine.status["pilot_gave_up"] is False
    # Worker 1 fails without ever claiming (a broken Python): no more workers are submitted,
    # the round is over and the caller judges what is left from that job.
    broken = {"status": "failed", "exit_status": "aborted", "exit_value": 1}
    assert keeper.tick(None, [killed, broken]) is True
    assert engine.status["pilot_gave_up"] is True


def test_keeper_releases_held_chunks_after_the_canarys_outcome(tmp_path: Path) -> None:
    from remotemap.backends.cluster.pilots import Keeper
    from remotemap.pilot import held_name

    queue = make_queue(tmp_path, 0, range(1))
    (tmp_path / held_name(0)).touch()
    engine = _Engine(tmp_path, {"workers": 2, "files": [[f, f] for f in range(4)],
                                "poll_interval": 0.1})
    keeper = Keeper(engine)
    assert queue.claim(0, lambda waiting: 1) == [0]
    keeper.release()
    assert queue.held() and queue.waiting() == []  # no outcome of the canary yet
    _outcome(tmp_path, 0)
    keeper.release()
    assert queue.held()  # seen now: the caller gets a moment to stop the run
    keeper.canary_seen -= 1.0  # hold_seconds is at least 1 s: as if that second passed
    keeper.release()
    assert not queue.held() and queue.waiting() == [1, 2, 3]


class _StopRecorder:
    """Stands in for soma-workflow's controller: records which jobs the keeper stops (the
    status lag this is about cannot be produced on demand on a real scheduler)."""

    def __init__(self) -> None:
        self.stopped: list[tuple[int, list[int]]] = []
        self.called = threading.Event()

    def stop_jobs(self, wf_id: int, job_ids: list[int]) -> None:
        self.stopped.append((wf_id, sorted(job_ids)))
        self.called.set()


def test_keeper_drops_only_queued_workers_that_hold_no_claim(tmp_path: Path) -> None:
    from remotemap.backends.cluster.pilots import Keeper

    queue = make_queue(tmp_path, 0, range(2))
    engine = _Engine(tmp_path, {"workers": 3, "files": [[f, f] for f in range(2)]})
    engine.status["swf_ids"] = [11, 12, 13]
    keeper = Keeper(engine)
    assert queue.claim(0, lambda waiting: 1) == [0]
    # Worker 1 started and took the last chunk, but soma-workflow still calls it queued.
    assert queue.claim(1, lambda waiting: 1) == [1]
    assert queue.waiting() == []
    running = {"status": "running", "wf": 7}
    queued = {"status": "queued_active", "wf": 7}
    controller = _StopRecorder()
    assert keeper.tick(controller, [running, queued, dict(queued)]) is False
    assert controller.called.wait(5)
    assert controller.stopped == [(7, [13])]  # worker 2 only: worker 1 holds a claim
    assert engine.status["pilot_stopped"] == [2]

