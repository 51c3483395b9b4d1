"""``Executor`` futures with ``concurrent.futures.wait`` and ``as_completed``, as CPython's
test_wait and test_as_completed check them; see test_futures_contract.py for the rest."""

from __future__ import annotations

import gc
import itertools
import threading
import time
import weakref
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

from remotemap import Executor
from tests.futures_support import (
    cancelled_future,
    done_future,
    mul,
    touch,
    wait_for,
    wait_then_raise,
)

# -- test_wait --------------------------------------------------------------------------------

def test_wait_on_the_same_future_twice(executor: Executor) -> None:
    future = executor.submit(mul, 1, 2)
    done, not_done = futures.wait([future, future], return_when=futures.ALL_COMPLETED)
    assert (done, not_done) == ({future}, set())


def test_first_completed(executor: Executor, release: Callable[[str], str]) -> None:
    cancelled = cancelled_future(notified=False)
    future1 = executor.submit(mul, 21, 2)
    future2 = executor.submit(wait_for, release("gate"))
    done, not_done = futures.wait([cancelled, future1, future2],
                                  return_when=futures.FIRST_COMPLETED)
    assert (done, not_done) == ({future1}, {cancelled, future2})


def test_first_completed_some_already_completed(executor: Executor,
                                                release: Callable[[str], str]) -> None:
    notified, success = cancelled_future(notified=True), done_future(42)
    future1 = executor.submit(wait_for, release("gate"))
    finished, pending = futures.wait([notified, success, future1],
                                     return_when=futures.FIRST_COMPLETED)
    assert (finished, pending) == ({notified, success}, {future1})


def test_first_exception(executor: Executor, release: Callable[[str], str]) -> None:
    gate1, gate2 = release("gate1"), release("gate2")
    future1 = executor.submit(mul, 2, 21)
    future2 = executor.submit(wait_then_raise, gate1)
    future3 = executor.submit(wait_for, gate2)
    # future2 fails only after future1 is done, so both are in the first batch done.
    def open_gate1() -> None:
        future1.result()
        touch(gate1)

    opener = threading.Thread(target=open_gate1)
    opener.start()
    submitted: list[futures.Future[Any]] = [future1, future2, future3]
    finished, pending = futures.wait(submitted,
                                     return_when=futures.FIRST_EXCEPTION)
    opener.join()
    assert (finished, pending) == ({future1, future2}, {future3})


def test_first_exception_some_already_complete(executor: Executor,
                                               release: Callable[[str], str]) -> None:
    success, notified = done_future(42), cancelled_future(notified=True)
    cancelled = cancelled_future(notified=False)
    future1 = executor.submit(divmod, 21, 0)
    future2 = executor.submit(wait_for, release("gate"))
    finished, pending = futures.wait([success, cancelled, notified, future1, future2],
                                     return_when=futures.FIRST_EXCEPTION)
    assert (finished, pending) == ({success, notified, future1}, {cancelled, future2})


def test_first_exception_one_already_failed(executor: Executor,
                                            release: Callable[[str], str]) -> None:
    failed = done_future(exception=OSError())
    future1 = executor.submit(wait_for, release("gate"))
    finished, pending = futures.wait([failed, future1], return_when=futures.FIRST_EXCEPTION)
    assert (finished, pending) == ({failed}, {future1})


def test_all_completed(executor: Executor) -> None:
    already = {done_future(42), cancelled_future(notified=True), done_future(exception=OSError())}
    future1, future2 = executor.submit(divmod, 2, 0), executor.submit(mul, 2, 21)
    finished, pending = futures.wait([*already, future1, future2],
                                     return_when=futures.ALL_COMPLETED)
    assert (finished, pending) == ({*already, future1, future2}, set())


def test_wait_on_many_futures_released_at_once(executor: Executor,
                                               release: Callable[[str], str]) -> None:
    gate = release("gate")
    fs = {executor.submit(wait_for, gate) for _ in range(100)}
    touch(gate)
    finished, pending = futures.wait(fs, timeout=120, return_when=futures.ALL_COMPLETED)
    assert (finished, pending) == (fs, set())


def test_wait_timeout(executor: Executor, release: Callable[[str], str]) -> None:
    already = {done_future(42), cancelled_future(notified=True), done_future(exception=OSError())}
    future = executor.submit(wait_for, release("gate"))
    finished, pending = futures.wait([*already, future], timeout=0.05,
                                     return_when=futures.ALL_COMPLETED)
    assert (finished, pending) == (already, {future})


# -- test_as_completed ------------------------------------------------------------------------

def test_as_completed_no_timeout(executor: Executor) -> None:
    already = {done_future(42), cancelled_future(notified=True), done_future(exception=OSError())}
    future1, future2 = executor.submit(mul, 2, 21), executor.submit(mul, 7, 6)
    assert set(futures.as_completed([*already, future1, future2])) == {*already, future1,
                                                                        future2}


@pytest.mark.parametrize("timeout", [0, 0.1])
def test_as_completed_times_out(executor: Executor, release: Callable[[str], str],
                                timeout: float) -> None:
    already = {done_future(42), cancelled_future(notified=True), done_future(exception=OSError())}
    future = executor.submit(wait_for, release("gate"))
    seen = set()
    with pytest.raises(futures.TimeoutError):
        for f in futures.as_completed(already | {future}, timeout):
            seen.add(f)
    assert seen == already


def test_as_completed_duplicate_futures(executor: Executor, tmp_path: Path) -> None:
    future = executor.submit(time.sleep, 0.5)
    assert len(list(futures.as_completed(itertools.repeat(future, 3)))) == 1


def test_as_completed_drops_the_futures_it_yielded(executor: Executor) -> None:
    pending = [executor.submit(mul, i, i) for i in range(6)]
    for future in futures.as_completed(pending):
        pending.remove(future)
        ref = weakref.ref(future)
        del future
        gc.collect()
        assert ref() is None, "the executor keeps a finished future"


def test_as_completed_timeout_message(executor: Executor, release: Callable[[str], str]) -> None:
    gate = release("gate")
    running = [executor.submit(wait_for, gate), executor.submit(wait_for, gate)]
    with pytest.raises(futures.TimeoutError) as info:
        list(futures.as_completed([cancelled_future(True), *running, done_future(1)],
                                  timeout=0))
    assert str(info.value) == "2 (of 4) futures unfinished"
