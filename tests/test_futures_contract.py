"""``Executor`` held to the concurrent.futures contract, as CPython's own suite checks it.

The behaviours of ``Lib/test/test_concurrent_futures/`` (test_executor, test_wait,
test_as_completed; test_shutdown and test_deadlock are in test_futures_contract_shutdown.py),
rewritten for remotemap and run on serial, local and local_with_dumps.

Left out, because they check a stdlib pool's internals rather than the contract:
- ``_threads`` / ``_processes`` counts and reuse (test_threads_terminate,
  test_processes_terminate, test_saturation, test_idle_process_reuse_*, test_killed_child,
  which terminates one of ``_processes``), ``_max_workers`` defaults and Windows' limit of 61,
  ``max_tasks_per_child`` and ``mp_context``: remotemap's workers belong to its backends;
- ``_RemoteTraceback``'s own pickling and its ``.tb`` attribute: remotemap's cause is
  :class:`remotemap.RemoteTraceback` (its text and ``.failure`` are checked below);
- ``thread_name_prefix`` and the threads' names, ``initializer`` / ``initargs``;
- ``_ExecutorManagerThread`` / ``_ThreadWakeup`` patched to fill the wake-up pipe (gh-105829),
  and ``_call_queue.join_thread()``: internals of ProcessPoolExecutor;
- ``futures.process.BrokenProcessPool``: a remotemap worker that dies fails its own task only
  (test_futures_contract_shutdown.py checks that instead).
"""

from __future__ import annotations

import copyreg
import gc
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

from remotemap import Executor, ModeName, RemoteException, RemoteTraceback
from tests.backends import Runner
from tests.futures_support import MODES, capture, mul, wait_for

# -- task functions (module level: workers import them by reference) --------------------------

def raise_runtime_error() -> None:
    raise RuntimeError(123)  # the line the remote traceback must show


class NeedsTwo(Exception):
    """An exception that pickles (args holds one value) but cannot be rebuilt from it."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)


def raise_needs_two(x: int) -> None:
    raise NeedsTwo(x, x)


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: int) -> MyObject:
    return MyObject()


def worker_pid(_: int) -> int:
    return os.getpid()


class MarksWhenFreed:
    """Leaves ``<pid>.freed`` in ``directory`` when the process holding it frees it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __del__(self) -> None:
        Path(self.directory, f"{os.getpid()}.freed").touch()


# -- test_executor ----------------------------------------------------------------------------

def test_submit(executor: Executor) -> None:
    assert executor.submit(pow, 2, 8).result() == 256


def test_submit_keyword(executor: Executor) -> None:
    assert executor.submit(mul, 2, y=8).result() == 16
    # fn and self are positional-only: tasks may take keywords of those names.
    assert executor.submit(capture, 1, self=2, fn=3).result() == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=capture, arg=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        executor.submit(arg=1)  # type: ignore[call-arg]


@pytest.mark.parametrize("chunksize", [1, 3, 6, 40, 50])
def test_map(executor: Executor, chunksize: int) -> None:
    expected = list(map(pow, range(40), range(40)))
    assert list(executor.map(pow, range(40), range(40), chunksize=chunksize)) == expected
    assert list(executor.map(pow, range(3), range(10), chunksize=chunksize)) == [1, 1, 4]
    assert list(executor.map(pow, [], [], chunksize=chunksize)) == []


@pytest.mark.parametrize("chunksize", [0, -1, 1.5])
def test_map_refuses_a_chunksize_below_one(executor: Executor, chunksize: Any) -> None:
    with pytest.raises(ValueError, match="chunksize"):
        list(executor.map(pow, range(4), range(4), chunksize=chunksize))


def test_map_chunksize_sends_calls_together(executor: Executor) -> None:
    pids = list(executor.map(worker_pid, range(10), chunksize=5))
    assert len(set(pids[:5])) == 1 and len(set(pids[5:])) == 1  # one process per chunk


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_exception(executor: Executor, chunksize: int) -> None:
    results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5], chunksize=chunksize)
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError) as info:
        next(results)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert info.value.__cause__.failure.index == 2


def test_map_timeout(executor: Executor, release: Callable[[str], str], tmp_path: Path) -> None:
    executor.submit(int).result()  # the backend is up: only the tasks count against timeout
    there, gate = tmp_path / "there", release("gate")
    there.touch()
    results: list[Any] = []
    started = time.monotonic()
    with pytest.raises(futures.TimeoutError):
        for value in executor.map(wait_for, [str(there), str(there), gate], timeout=2):
            results.append(value)
    assert results == [str(there)] * 2
    assert 1.5 < time.monotonic() - started < 30


def test_shutdown_race_issue12456(mode_runner: Runner) -> None:
    ex = mode_runner.executor()
    results = ex.map(str, [2] * 5)
    ex.shutdown()
    assert list(results) == ["2"] * 5


def test_no_stale_references(executor: Executor) -> None:
    my_object = MyObject()
    collected = threading.Event()
    ref = weakref.ref(my_object, lambda _: collected.set())  # noqa: F841 - kept to be called
    executor.submit(my_object.my_method)  # the future is dropped on purpose
    del my_object
    deadline = time.monotonic() + 30
    while not collected.wait(0.2) and time.monotonic() < deadline:
        gc.collect()
    assert collected.is_set(), "the executor kept the submitted callable"


def test_free_reference(executor: Executor) -> None:
    for obj in executor.map(make_dummy_object, range(10)):
        ref = weakref.ref(obj)
        del obj
        deadline = time.monotonic() + 10
        while ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert ref() is None, "a result is kept after it was handed over"


def test_arguments_are_freed_where_the_task_ran(mode_runner: Runner, tmp_path: Path) -> None:
    if not mode_runner.pickles:
        pytest.skip(f"{mode_runner.mode} passes the caller's own object "
                    "(test_no_stale_references covers that)")
    with mode_runner.executor() as ex:
        marker = MarksWhenFreed(str(tmp_path))
        assert ex.submit(id, marker).result() > 0
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob("*.freed")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [p.name for p in tmp_path.glob("*.freed")] != [], "the worker kept the argument"
        assert not (tmp_path / f"{os.getpid()}.freed").exists()  # the caller's copy is alive
        del marker


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("number", [0, -1, 2.0])
def test_max_workers_must_be_a_whole_number_of_at_least_one(mode: str, number: Any) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        Executor(ModeName(mode), max_workers=number)


# -- what result() raises ---------------------------------------------------------------------

def test_result_raises_the_task_exception_with_the_remote_traceback(executor: Executor) -> None:
    future = executor.submit(raise_runtime_error)
    with pytest.raises(RuntimeError) as info:
        future.result()
    exc = info.value
    assert type(exc) is RuntimeError and exc.args == (123,)
    assert future.exception() is exc
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert cause.failure.index == 0 and cause.failure.exception_type == "RuntimeError"
    assert "raise RuntimeError(123)  # the line the remote traceback must show" in str(cause)
    shown = "".join(traceback.format_exception(exc))  # what an uncaught one would print
    assert "raise RuntimeError(123)  # the line the remote traceback must show" in shown


def test_result_keeps_the_exception_attributes(executor: Executor) -> None:
    from tests.taskfuncs import CustomError, raise_custom

    with pytest.raises(CustomError) as info:
        executor.submit(raise_custom, 7).result()
    assert info.value.code == 7 and info.value.args == (7, "custom detail")


def test_except_clauses_from_process_pool_code_still_match(executor: Executor) -> None:
    caught: list[Any] = []
    for future in futures.as_completed([executor.submit(divmod, 1, d) for d in (1, 0)]):
        try:
            caught.append(future.result())
        except ZeroDivisionError as exc:  # as it was written for ProcessPoolExecutor
            caught.append(type(exc).__name__)
    assert sorted(map(str, caught)) == ["(1, 0)", "ZeroDivisionError"]


def test_a_remote_exception_stands_in_where_it_cannot_be_rebuilt(executor: Executor) -> None:
    # Importing distributed (other tests of this process do) runs tblib's pickling_support
    # install(), which registers in copyreg a reducer for every exception class defined then,
    # NeedsTwo included, and that reducer rebuilds it without calling __init__. Take it out
    # for this test, so that NeedsTwo is again an exception that cannot be rebuilt.
    copyreg.dispatch_table.pop(NeedsTwo, None)
    future = executor.submit(raise_needs_two, 5)
    with pytest.raises(RemoteException) as info:
        future.result()
    assert type(info.value) is RemoteException
    failure = info.value.failures[0]
    assert (failure.index, failure.exception_type) == (0, "NeedsTwo")
    assert "raise NeedsTwo(x, x)" in failure.traceback


def test_a_crashed_task_raises_a_remote_exception(mode_runner: Runner) -> None:
    if not mode_runner.isolates_crashes:
        pytest.skip(f"{mode_runner.mode} runs tasks in the caller's own process")
    from tests.taskfuncs import crash_on

    with mode_runner.executor() as ex:
        crashed, fine = ex.submit(crash_on, 3), ex.submit(crash_on, 4)
        with pytest.raises(RemoteException) as info:
            crashed.result()
        assert info.value.failures[0].kind == "crash" and info.value.failures[0].index == 0
        assert fine.result() == 4 and ex.submit(mul, 6, 7).result() == 42  # still usable


def test_the_cause_carries_every_attempt(mode_runner: Runner, tmp_path: Path) -> None:
    from tests.taskfuncs import fail_until

    with mode_runner.executor(retries=1, backoff=0.01) as ex, \
            pytest.raises(RuntimeError, match="attempt 2 of task 0 fails") as info:
        ex.submit(fail_until, str(tmp_path), 0, 5).result()
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert cause.failure.attempts == 2
    assert [p.message for p in cause.failure.previous] == ["attempt 1 of task 0 fails"]
