"""Every task's start and end time and the worker that ran it are recorded, on every mode, and
kept: in a stored run's results, and on each failure (earlier attempts included)."""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
from pathlib import Path

import pytest

from remotemap import RemoteException
from remotemap.execution import run_chunk
from remotemap.tasks import Chunk
from remotemap.timeline import run_results
from tests import taskfuncs as tf
from tests.backends import Runner

_WORKER = re.compile(r"^(?P<host>[^:]+):(?P<pid>\d+)$")


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stored runs are indexed under a private state directory of the test."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def test_each_task_has_its_time_and_worker(runner: Runner, tmp_path: Path) -> None:
    n = 8
    before = time.time()
    with pytest.raises(RemoteException) as info:
        runner.map(tf.fail_on, [(i,) for i in range(n)], run_dir=str(tmp_path / "run"))
    after = time.time()
    results = run_results(tmp_path / "run")
    timings = {i: t for r in results for i, t in r.task_times().items()}
    assert sorted(timings) == list(range(n))
    for start, end in timings.values():  # every host here runs on this machine's clock
        assert before <= start <= end <= after
    for result in results:
        worker = _WORKER.match(result.worker)
        assert worker is not None, result.worker
        # ssh runs on a host of its own (a UTS namespace, the same kernel clock)
        assert (worker["host"] == socket.gethostname()) == runner.same_host_python
        # serial runs the tasks in the caller; every other mode in worker processes
        assert (int(worker["pid"]) == os.getpid()) == (runner.mode == "serial")
    [failure] = info.value.failures
    assert failure.index == 2
    assert failure.timing == timings[2]
    assert failure.worker == next(r.worker for r in results if 2 in r.task_times())


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
def test_a_crashed_task_gets_the_time_the_caller_knows(mode: str, tmp_path: Path) -> None:
    runner = Runner(mode, {"n_jobs": 2, **({"chunksize": 1} if mode == "local" else {})})
    before = time.time()
    with pytest.raises(RemoteException) as info:
        runner.map(tf.crash_on, [(i,) for i in range(5)], run_dir=str(tmp_path / "run"))
    after = time.time()
    [failure] = info.value.failures
    assert failure.kind == "crash" and failure.index == 3
    # The worker died with its record: from the chunk's sending to the caller learning of it.
    assert failure.timing is not None
    assert before <= failure.timing[0] <= failure.timing[1] <= after
    stored = {i: t for r in run_results(tmp_path / "run") for i, t in r.task_times().items()}
    assert stored[3] == failure.timing
    assert sorted(stored) == list(range(5))


def test_earlier_attempts_and_timeouts_keep_their_times(tmp_path: Path) -> None:
    runner = Runner("local", {"n_jobs": 2})
    counters = tmp_path / "counters"
    counters.mkdir()
    with pytest.raises(RemoteException) as info:
        runner.map(tf.fail_until, [(str(counters), i) for i in range(3)],
                   [{"failures": 5 if i == 1 else 0} for i in range(3)],
                   retries=2, backoff=0.01)
    [failure] = info.value.failures
    attempts = [*failure.previous, failure]
    assert len(attempts) == 3
    times = [a.timing for a in attempts if a.timing is not None]
    assert len(times) == 3 and all(start <= end for start, end in times)
    # one after the other: each retry starts after the attempt before it ended
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(times))
    assert all(_WORKER.match(a.worker) for a in attempts)
    with pytest.raises(RemoteException) as info:
        runner.map(tf.sleep_for, [(0,), (1,)], [{"seconds": 0.0}, {"seconds": 30.0}],
                   timeout=1.0)
    [timeout] = info.value.failures
    assert timeout.kind == "timeout" and timeout.timing is not None
    assert 0.9 <= timeout.timing[1] - timeout.timing[0] < 30


@pytest.mark.parametrize("mode", ["serial", "local"])
def test_each_bar_spans_its_own_task(mode: str, tmp_path: Path) -> None:
    """Tiny tasks are timed in groups (a clock read each would cost more than they do); a
    slow one among them still gets its own span, and a chunk's tasks follow one another."""
    n, slow = 300, 150
    options = {"n_jobs": 1, "chunksize": n} if mode == "local" else {}
    Runner(mode, options).map(tf.sleep_for, [(i,) for i in range(n)],
                              [{"seconds": 0.2 if i == slow else 0.0} for i in range(n)],
                              run_dir=str(tmp_path / "run"))
    results = run_results(tmp_path / "run")
    times = {i: t for r in results for i, t in r.task_times().items()}
    assert sorted(times) == list(range(n))
    assert times[slow][1] - times[slow][0] >= 0.2
    assert all(end - start < 0.05 for i, (start, end) in times.items() if i != slow)
    for result in results:
        spans = [times[i] for i in sorted(result.indices)]
        assert all(a[0] <= a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans))


def test_tiny_tasks_cost_a_clock_read_per_group_not_per_task() -> None:
    """A clock read costs a few hundred ns on some machines, more than a tiny task: tasks
    under 10 us are timed in groups of up to 64; 1 ms tasks one by one."""
    n = 5000
    # Unloaded, about n/64 reads. A task preempted by another process (a busy CI machine)
    # looks slow and restarts its group at 1: allow for that, far below one read per task,
    # and take the least disturbed of three runs.
    tiny = min((run_chunk(tf.square, Chunk(0, list(range(n)), [(i,) for i in range(n)],
                                           [{}] * n)) for _ in range(3)),
               key=lambda result: len(result.ends))
    assert len(tiny.ends) < n / 8
    assert len(tiny.task_times()) == n
    slow = run_chunk(time.sleep, Chunk(1, list(range(20)), [(0.001,)] * 20, [{}] * 20))
    assert len(slow.ends) == 20
