"""``executor=``: remote_map, remote_imap and Executor on any concurrent.futures executor.

The driver keeps owning the contract (results in order, RemoteException with every failure and
the partial results, retries, resume), so these tests run real pools (threads, the standard
library's processes, loky's) and a real dask LocalCluster on loopback.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap import Executor, RemoteException, RemoteTraceback, remote_imap, remote_map
from remotemap.backends.foreign_executor import executor_backend
from remotemap.session import TaskOptions
from tests import taskfuncs as tf

PoolMaker = Callable[[], cf.Executor]


def _loky() -> cf.Executor:
    # A pool of its own, not loky's reusable one that mode "local" shares.
    from loky import ProcessPoolExecutor

    pool: cf.Executor = ProcessPoolExecutor(2)
    return pool


POOLS: dict[str, PoolMaker] = {
    "threads": lambda: cf.ThreadPoolExecutor(2),
    "processes": lambda: cf.ProcessPoolExecutor(2),
    "loky": _loky,
}


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[str, cf.Executor]]:
    """One pool of each kind for the module (starting loky's takes seconds), made on first
    use; every test leaves its pool as it found it."""
    made: dict[str, cf.Executor] = {}
    yield made
    for executor in made.values():
        executor.shutdown(wait=True)


def _pool(pools: dict[str, cf.Executor], kind: str) -> cf.Executor:
    if kind not in pools:
        pools[kind] = POOLS[kind]()
    return pools[kind]


@pytest.fixture(params=list(POOLS))
def pool(request: pytest.FixtureRequest, pools: dict[str, cf.Executor]) -> cf.Executor:
    return _pool(pools, request.param)


@pytest.fixture(params=["processes", "loky"])
def process_pool(request: pytest.FixtureRequest, pools: dict[str, cf.Executor]) -> cf.Executor:
    return _pool(pools, request.param)


def test_results_in_order_failures_and_partial_results(pool: cf.Executor) -> None:
    assert remote_map(tf.foo, [(i,) for i in range(6)], [{"b": 10}] * 6,
                      executor=pool) == [10, 11, 12, 13, 14, 15]
    with pytest.raises(RemoteException) as info:
        remote_map(tf.fail_on, [(i,) for i in range(5)], [{"bad": (1, 3)}] * 5, executor=pool)
    assert info.value.failed_indices == [1, 3]
    assert info.value.results == [0, None, 2, None, 4]
    assert info.value.failures[0].exception_type == "ValueError"
    assert "bad value 1" in info.value.failures[0].traceback
    # The executor is the caller's: it is left open.
    assert pool.submit(tf.square, 3).result() == 9


def test_retries_and_imap(pool: cf.Executor, tmp_path: Path) -> None:
    got = remote_map(tf.fail_until, [(str(tmp_path), i, 1) for i in range(3)], retries=1,
                     backoff=0.0, executor=pool)
    assert got == [2, 2, 2]  # every task failed once, then succeeded on its second attempt
    assert dict(remote_imap(tf.square, [(i,) for i in range(4)], executor=pool)) == \
        {0: 0, 1: 1, 2: 4, 3: 9}


def test_exhausted_retries_keep_every_attempt(pool: cf.Executor, tmp_path: Path) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(tf.fail_until, [(str(tmp_path), 0, 5)], retries=2, backoff=0.0,
                   executor=pool)
    failure = info.value.failures[0]
    assert failure.attempts == 3 and len(failure.previous) == 2


def test_resume_runs_only_what_did_not_succeed(pool: cf.Executor, tmp_path: Path) -> None:
    counters, run_dir, gate = tmp_path / "n", tmp_path / "run", tmp_path / "gate"
    counters.mkdir()
    gate.touch()
    largs = [(str(counters), i, str(gate) if i == 2 else "") for i in range(4)]
    with pytest.raises(RemoteException):
        remote_map(tf.count_runs, largs, executor=pool, run_dir=run_dir)
    gate.unlink()
    assert remote_map(tf.count_runs, largs, executor=pool, run_dir=run_dir) == [0, 10, 20, 30]
    runs = sorted(p.name.split(".")[0] for p in counters.iterdir())
    assert runs == ["0", "1", "2", "2", "3"]  # only task 2 ran twice


def test_stop_at_first_failure_leaves_later_tasks_unrun(tmp_path: Path) -> None:
    with cf.ThreadPoolExecutor(1) as threads, pytest.raises(RemoteException) as info:
        remote_map(tf.touch_then_fail, [(str(tmp_path), i, 0) for i in range(40)],
                   executor=threads, on_error="stop")
    assert info.value.failed_indices == [0]
    assert len(list(tmp_path.iterdir())) < 40


def test_lambdas_cross_a_process_pool_and_bad_pickles_fail_alone(
        process_pool: cf.Executor) -> None:
    offset = 7
    assert remote_map(lambda x: x + offset, [(1,), (2,)], executor=process_pool) == [8, 9]
    with pytest.raises(RemoteException) as info:
        remote_map(tf.identity, [(1,), (threading.Lock(),), (3,)], executor=process_pool)
    assert [(f.index, f.kind) for f in info.value.failures] == [(1, "pickling")]
    assert info.value.results == [1, None, 3]


def test_timeout_and_env_on_a_process_pool(process_pool: cf.Executor) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteException) as info:
        remote_map(tf.sleep_for, [(0, 0.0), (1, 30.0), (2, 0.0)], timeout=1.0,
                   executor=process_pool)
    assert time.monotonic() - started < 15
    assert [(f.index, f.kind) for f in info.value.failures] == [(1, "timeout")]
    assert info.value.results == [0, None, 2]
    got = remote_map(tf.read_env, [("RM_FOREIGN_TEST",)], env={"RM_FOREIGN_TEST": "a b"},
                     executor=process_pool)
    assert got == ["a b"] and "RM_FOREIGN_TEST" not in os.environ


def test_a_remotemap_executor_can_be_the_executor() -> None:
    with Executor("local_with_dumps", n_jobs=2) as inner:
        assert executor_backend(inner, TaskOptions()).workers >= 1
        assert remote_map(lambda x: -x, [(1,), (2,)], executor=inner) == [-1, -2]


def test_a_dead_worker_fails_its_tasks_as_a_crash() -> None:
    with cf.ProcessPoolExecutor(1) as processes, pytest.raises(RemoteException) as info:
        remote_map(tf.crash_on, [(3,)], executor=processes)
    assert [(f.index, f.kind) for f in info.value.failures] == [(0, "crash")]


@pytest.mark.parametrize("options", [{"timeout": 1.0}, {"env": {"A": "1"}}])
def test_thread_pools_refuse_timeout_and_env_before_running(options: dict[str, Any],
                                                            tmp_path: Path) -> None:
    with cf.ThreadPoolExecutor(1) as threads, \
            pytest.raises(ValueError, match=r"ThreadPoolExecutor: remotemap stops"):
        remote_map(tf.touch_then_fail, [(str(tmp_path), 1)], executor=threads, **options)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("extra", [{"mode": "local"}, {"config": "c.toml"}, {"n_jobs": 2}])
def test_an_executor_excludes_a_mode_and_its_options(extra: dict[str, Any]) -> None:
    with cf.ThreadPoolExecutor(1) as threads, \
            pytest.raises(ValueError, match="give an executor or a mode with its options"):
        remote_map(tf.square, [(1,)], executor=threads, **extra)
    with pytest.raises(TypeError, match=r"must be a concurrent\.futures\.Executor, got str"):
        remote_map(tf.square, [(1,)], executor="local")  # type: ignore[call-overload]


def test_futures_interface_over_a_foreign_pool(pool: cf.Executor, tmp_path: Path) -> None:
    with Executor(executor=pool, retries=1, backoff=0.0) as ex:
        assert ex.mode == "executor"
        assert ex.submit(tf.foo, 1, b=5).result(timeout=60) == 6
        assert list(ex.map(tf.square, range(4))) == [0, 1, 4, 9]
        assert ex.submit(tf.fail_until, str(tmp_path), 0, 1).result(timeout=60) == 2
        error = ex.submit(tf.raise_custom, 4).exception(timeout=60)
    assert isinstance(error, tf.CustomError) and error.code == 4
    assert isinstance(error.__cause__, RemoteTraceback)
    with pytest.raises(ValueError, match="give an executor or a mode"):
        Executor("serial", executor=pool)  # type: ignore[call-overload]


# -- dask: a real LocalCluster of worker processes on loopback ---------------------------------

@pytest.fixture(scope="module")
def dask_executor(dask_scheduler: str) -> Iterator[cf.Executor]:
    """A dask client's executor on the session's cluster (tests/backends.py: two worker
    processes, one thread each), closed after. Its own LocalCluster cost ~3 s more."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(dask_scheduler, set_as_default=False) as client:
        # Both workers: a test before may have killed one, which its nanny restarts.
        client.wait_for_workers(2, timeout=60)
        executor: cf.Executor = client.get_executor()
        yield executor


def test_dask_runs_remotemaps_contract(dask_executor: cf.Executor, tmp_path: Path) -> None:
    offset = 1
    assert remote_map(lambda x: x + offset, [(i,) for i in range(5)],
                      executor=dask_executor) == [1, 2, 3, 4, 5]
    with pytest.raises(RemoteException) as info:
        remote_map(tf.fail_on, [(i,) for i in range(4)], executor=dask_executor)
    assert info.value.failed_indices == [2] and info.value.results == [0, 1, None, 3]
    # A retry is a new dask task: dask names tasks by their arguments, a retry must not get
    # the first attempt's result back.
    assert remote_map(tf.fail_until, [(str(tmp_path), i, 1) for i in range(3)], retries=1,
                      backoff=0.0, executor=dask_executor) == [2, 2, 2]
    assert sorted(remote_imap(tf.square, [(i,) for i in range(3)], executor=dask_executor)) \
        == [(0, 0), (1, 1), (2, 4)]


def test_dask_refuses_a_timeout_and_serves_the_futures_interface(
        dask_executor: cf.Executor, tmp_path: Path) -> None:
    # Chunks are sized for the cluster's threads, not for this machine's CPUs.
    assert executor_backend(dask_executor, TaskOptions()).workers == 2
    with pytest.raises(ValueError, match=r"ClientExecutor: remotemap stops a task"):
        remote_map(tf.square, [(1,)], timeout=5.0, executor=dask_executor)
    with Executor(executor=dask_executor, retries=1, backoff=0.0) as ex:
        assert ex.submit(tf.add, 2, 3).result(timeout=60) == 5
        # The executor retries a task as the same chunk: only a fresh dask key runs it again.
        assert ex.submit(tf.fail_until, str(tmp_path), 0, 1).result(timeout=60) == 2
        error = ex.submit(tf.raise_custom, 7).exception(timeout=60)
    assert isinstance(error, tf.CustomError) and error.code == 7
