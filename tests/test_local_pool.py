"""``local``'s worker pool (``backends.local_pool``): processes that read chunks from pipes the
caller writes. These pin down what loky's reusable executor did for the old path and what the
pipes must not lose: workers kept warm between calls, replaced when they ended or when the
environment changed, never a result lost or given to the wrong chunk, nothing left at exit.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.backends import local_pool
from remotemap.backends.local_pool import QUEUE_AHEAD_BYTES, WorkerPool
from tests import taskfuncs as tf

ROOT = str(Path(__file__).resolve().parents[1])


def pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


def env_and_pid(name: str) -> tuple[str | None, int]:
    return os.environ.get(name), os.getpid()


def answer(delay: float, payload: bytes) -> bytes:
    """A pool worker's ``run`` for these tests: wait ``delay`` s, answer (pid, payload)."""
    time.sleep(delay)
    return pickle.dumps((os.getpid(), payload))


def no_setup() -> None:
    pass


def _collect(pool: WorkerPool, timeout: float = 30) -> dict[Any, tuple[int, bytes]]:
    answers: dict[Any, tuple[int, bytes]] = {}
    deadline = time.monotonic() + timeout
    while pool.busy:
        assert time.monotonic() < deadline, "answers never came"
        got, died = pool.wait(1, [])
        assert died == []
        answers.update((job, pickle.loads(data)) for job, data in got)
    return answers


def test_each_answer_goes_to_its_own_chunk_whatever_order_workers_end_in() -> None:
    pool = WorkerPool(2, {}, answer, no_setup)
    try:
        # Worker 1 gets a slow chunk, worker 2 two quick ones: answers come out of order.
        for job, delay in (("slow", 0.5), ("quick-1", 0.0), ("quick-2", 0.0)):
            assert pool.send(pickle.dumps((delay, job.encode())), job)
        answers = _collect(pool)
        assert {job: payload for job, (_, payload) in answers.items()} == {
            "slow": b"slow", "quick-1": b"quick-1", "quick-2": b"quick-2"}
        assert answers["slow"][0] != answers["quick-1"][0]  # both workers were used
    finally:
        pool.shutdown()


def test_a_large_chunk_waits_for_a_free_worker_instead_of_queueing() -> None:
    # Written behind a busy worker's chunk, it could block the caller while that worker
    # blocks writing its result back: so send() declines, and the caller sends it later.
    pool = WorkerPool(1, {}, answer, no_setup)
    try:
        assert pool.send(pickle.dumps((0.3, b"first")), "first")
        assert pool.send(pickle.dumps((0.0, b"small")), "small")
        large = pickle.dumps((0.0, b"x" * (QUEUE_AHEAD_BYTES + 1)))
        assert pool.send(large, "large") is False
        assert pool.busy == 2
        _collect(pool)
        assert pool.send(large, "large")  # free now
        assert _collect(pool)["large"][1] == b"x" * (QUEUE_AHEAD_BYTES + 1)
    finally:
        pool.shutdown()


def test_a_worker_killed_mid_chunk_is_reported_with_its_chunks_and_replaced() -> None:
    pool = WorkerPool(1, {}, answer, no_setup)
    try:
        assert pool.send(pickle.dumps((30.0, b"never")), "running")
        assert pool.send(pickle.dumps((0.0, b"queued")), "queued")
        pid = pool.workers[0].process.pid
        time.sleep(0.5)
        os.kill(pid, 9)
        got, died = pool.wait(10, [])
        assert got == []
        assert [(d.jobs, d.status) for d in died] == [(["running", "queued"], "signal:SIGKILL")]
        assert pool.workers == [] and pool.busy == 0
        assert pool.send(pickle.dumps((0.0, b"again")), "again")
        assert _collect(pool)["again"][1] == b"again"
    finally:
        pool.shutdown()


def test_idle_workers_exit_after_their_idle_time_and_come_back_when_needed() -> None:
    pool = WorkerPool(2, {}, answer, no_setup, idle_timeout=0.5)
    try:
        for job in ("a", "b"):
            assert pool.send(pickle.dumps((0.0, b"")), job)
        first = {pid for pid, _ in _collect(pool).values()}
        processes = [worker.process for worker in pool.workers]
        deadline = time.monotonic() + 20
        while any(p.exitcode is None for p in processes):
            assert time.monotonic() < deadline, "idle workers did not exit"
            time.sleep(0.1)
        assert [p.exitcode for p in processes] == [0, 0]
        for job in ("c", "d"):
            assert pool.send(pickle.dumps((0.0, b"")), job)
        again = {pid for pid, _ in _collect(pool).values()}
        assert again and not again & first  # new processes did the work
    finally:
        pool.shutdown()


def test_calls_reuse_the_warm_workers_and_survive_one_killed_between_calls() -> None:
    largs = [(i,) for i in range(40)]
    first = remote_map(pid_of, largs, mode="local", n_jobs=2, chunksize=5, progress=False)
    second = remote_map(pid_of, largs, mode="local", n_jobs=2, chunksize=5, progress=False)
    assert [x for x, _ in second] == list(range(40))
    assert {pid for _, pid in second} & {pid for _, pid in first}, "no worker was reused"
    for pid in {pid for _, pid in second}:
        os.kill(pid, 9)  # killed while idle, between two calls
    time.sleep(0.2)
    third = remote_map(pid_of, largs, mode="local", n_jobs=2, chunksize=5, progress=False)
    assert [x for x, _ in third] == list(range(40))
    assert not {pid for _, pid in third} & {pid for _, pid in second}


def test_a_call_with_another_environment_gets_workers_started_with_it() -> None:
    largs = [("RM_POOL_TEST",)] * 6
    one = remote_map(env_and_pid, largs, mode="local", n_jobs=2, chunksize=1,
                     env={"RM_POOL_TEST": "one"}, progress=False)
    two = remote_map(env_and_pid, largs, mode="local", n_jobs=2, chunksize=1,
                     env={"RM_POOL_TEST": "two"}, progress=False)
    assert {value for value, _ in one} == {"one"}
    assert {value for value, _ in two} == {"two"}
    assert not {pid for _, pid in one} & {pid for _, pid in two}


def test_calls_from_two_threads_at_once_each_get_their_own_results() -> None:
    out: dict[int, list[int]] = {}

    def call(k: int) -> None:
        out[k] = remote_map(pow, [(i, k) for i in range(300)], mode="local", n_jobs=2,
                            chunksize=7, progress=False)

    threads = [threading.Thread(target=call, args=(k,)) for k in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert out == {2: [i ** 2 for i in range(300)], 3: [i ** 3 for i in range(300)]}


_CALLER = textwrap.dedent("""
    import os, sys
    from remotemap import remote_map
    from tests.test_local_pool import pid_of
    pids = {pid for _, pid in remote_map(pid_of, [(i,) for i in range(20)], mode="local",
                                         n_jobs=2, chunksize=2, progress=False)}
    print(" ".join(map(str, pids - {os.getpid()})))
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not running
        return stat.read().split(") ")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_with_the_caller_s_normal_exit() -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CALLER], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=60, check=True)
    assert time.monotonic() - started < 30  # not held until the idle time ran out
    pids = [int(p) for p in proc.stdout.split()]
    assert pids, proc.stderr
    deadline = time.monotonic() + 5
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if _alive(p)] == []


def test_no_worker_started_by_the_pool_outlives_the_pools_shut_at_exit() -> None:
    pool = WorkerPool(2, {}, answer, no_setup)
    assert pool.send(pickle.dumps((0.0, b"")), "a")
    _collect(pool)
    processes = [worker.process for worker in pool.workers]
    local_pool._shutdown_all()  # what runs at exit: every pool, parked or not
    assert [p.exitcode for p in processes] == [0, 0]  # they ended on their own, not killed
    assert pool.workers == []


_REPEATED_CALLS = textwrap.dedent("""
    import json, time
    from remotemap import remote_map
    from remotemap.backends import local_pool
    from tests.test_local_pool import pid_of

    def one_call():
        return remote_map(pid_of, [(0,)], mode="local", n_jobs=2, progress=False)[0][1]

    first = [one_call()]
    deadline = time.monotonic() + 30
    while not local_pool.parked_pool_ready() and time.monotonic() < deadline:
        first.append(one_call())  # forked while the pool starts
        time.sleep(0.05)
    later = [one_call() for _ in range(10)]
    workers = [w.process.pid for w in local_pool._parked[0].workers] if local_pool._parked else []
    print(json.dumps({"first": first, "later": later, "workers": workers}))
""")


def test_calls_that_come_again_get_a_pool_instead_of_a_fork_each() -> None:
    # A script's only call of one chunk forks a child and starts no pool. A loop of such
    # calls would fork each time (~5-15 ms a call here, against ~1 ms from a warm pool): from
    # the second call the pool starts meanwhile, and once its workers are ready they answer.
    proc = subprocess.run([sys.executable, "-c", _REPEATED_CALLS], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=90,
                          check=True)
    seen = json.loads(proc.stdout)
    assert seen["workers"], f"no pool was ever ready: {seen}"
    assert len(set(seen["first"])) == len(seen["first"])  # forked: a new child each call
    assert set(seen["later"]) <= set(seen["workers"]), seen


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
def test_calls_inside_tasks_count_the_tasks_share_of_the_cpus(mode: Any) -> None:
    from loky import cpu_count

    share = max(1, cpu_count() // 2)
    options: dict[str, Any] = {"chunksize": 1} if mode == "local" else {}  # a task a chunk
    seen = remote_map(tf.cpus_seen, [(i,) for i in range(4)], mode=mode, n_jobs=2,
                      progress=False, **options)
    assert [s[:2] for s in seen] == [(share, 3)] * 4
    assert all(workers <= share + 1 for _, _, workers in seen)
