"""The contract every backend honours; each test runs once per backend (see tests/backends.py).

Serial mode is the reference: every other backend must give what it gives.
"""

from __future__ import annotations

import functools
import linecache
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from remotemap import RemoteException, remote_map
from tests import taskfuncs as tf
from tests.backends import Runner

#: Every mode runs this module, those of ``tests.backends.CONTRACT_ONLY`` included.
CONTRACT_SUITE = True


def test_documented_example(runner: Runner) -> None:
    assert runner.map(tf.foo, [(2,), (3,)], [{"b": 5}, {"b": 7}]) == [7, 10]


def test_argument_rules(runner: Runner) -> None:
    assert runner.map(tf.foo, [(1,), (2,)]) == [3, 4]
    assert runner.map(tf.foo, None, [{"a": 1}, {"a": 2, "b": 10}]) == [3, 12]
    assert runner.map(tf.echo_args) == [((), {})]
    assert runner.map(tf.identity, []) == []
    assert runner.map(tf.identity, [], []) == []


def test_functions_users_really_pass(runner: Runner) -> None:
    offset = 10

    def closure(x: int) -> int:
        return x + offset

    class Scaler:
        def __init__(self, k: int) -> None:
            self.k = k

        def __call__(self, x: int) -> int:
            return self.k * x

        def scale(self, x: int) -> int:
            return self.k * x + 1

    largs = [(i,) for i in range(5)]
    assert runner.map(lambda x: x * 3, largs) == [0, 3, 6, 9, 12]
    assert runner.map(closure, largs) == [10, 11, 12, 13, 14]
    assert runner.map(functools.partial(tf.add, b=100), largs) == [100, 101, 102, 103, 104]
    assert runner.map(Scaler(2), largs) == [0, 2, 4, 6, 8]
    assert runner.map(Scaler(3).scale, largs) == [1, 4, 7, 10, 13]
    assert runner.map(abs, [(-1,), (2,)]) == [1, 2]


def test_results_equal_serial_on_mixed_arguments(runner: Runner) -> None:
    largs = [(i, {"k": [i] * (i % 4)}, None if i % 3 else "x" * i) for i in range(57)]
    lkwargs = [{"flag": bool(i % 2)} if i % 5 else {} for i in range(57)]
    expected = remote_map(tf.echo_args, largs, lkwargs, mode="serial")
    assert runner.map(tf.echo_args, largs, lkwargs) == expected


def test_order_kept_whatever_finishes_first(runner: Runner) -> None:
    delays = [0.05 if i % 7 == 0 else 0.0 for i in range(30)]
    got = runner.map(tf.hostname_after, list(zip(range(30), delays, strict=True)))
    got = [i for i, _ in got]
    assert got == list(range(30))


def test_many_tiny_tasks(runner: Runner) -> None:
    n = 2000 if runner.mode != "local_with_dumps" else 200
    assert runner.map(tf.square, [(i,) for i in range(n)]) == [i * i for i in range(n)]


def test_large_array_argument(runner: Runner) -> None:
    arrays = [np.full(2_000_000, i, dtype=np.float64) for i in range(3)]  # 16 MB each
    if not runner.same_host_python:  # the test hosts have no numpy: a plain buffer then
        blobs = [bytearray([i]) * 16_000_000 for i in range(3)]
        assert runner.map(tf.byte_sum, [(b,) for b in blobs]) == [16_000_000 * i for i in range(3)]
        return
    assert runner.map(tf.array_sum, [(a,) for a in arrays]) == [2_000_000.0 * i for i in range(3)]


def test_failures_are_collected_with_partial_results(runner: Runner) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.fail_on, [(i,) for i in range(6)], [{"bad": (2, 4)}] * 6)
    exc = info.value
    assert exc.results == [0, 1, None, 3, None, 5]
    assert [f.index for f in exc.failures] == [2, 4]
    first = exc.failures[0]
    assert first.exception_type == "ValueError"
    assert first.message == "bad value 2"
    assert first.kind == "exception"
    assert "in fail_on" in first.traceback and "raise ValueError" in first.traceback
    assert "run_chunk" not in first.traceback  # starts in the user's function
    assert first.host
    assert isinstance(exc.__cause__, ValueError) and str(exc.__cause__) == "bad value 2"
    text = str(exc)
    assert text.startswith("2 of 6 tasks failed")
    assert "task 2 on" in text and "ValueError: bad value 2" in text


#: Where a notebook cell's code says it comes from: a file no host has, only linecache.
_CELL = "/nonexistent/notebook-cell-7.py"


def _cell_function() -> Any:
    """A function as a notebook defines one: compiled from a cell whose source only this
    process's linecache holds, in a module that cannot be imported (so it travels by value)."""
    source = ("def from_cell(x):\n"
              "    if x == 1:\n"
              "        raise KeyError('raised in the cell')\n"
              "    return x\n")
    linecache.cache[_CELL] = (len(source), None, source.splitlines(True), _CELL)
    namespace: dict[str, Any] = {"__name__": "notebook_cell"}
    exec(compile(source, _CELL, "exec"), namespace)
    return namespace["from_cell"]


def test_traceback_of_code_sent_by_value_names_its_file_and_source_line(runner: Runner) -> None:
    # cloudpickle >= 3.1.3 renames such code "<dynamic-code>"; no host has the cell's file, so
    # the line comes from the caller's linecache.
    with pytest.raises(RemoteException) as info:
        runner.map(_cell_function(), [(0,), (1,)])
    text = info.value.failures[0].traceback
    assert f'File "{_CELL}", line 3, in from_cell' in text
    assert "raise KeyError('raised in the cell')" in text
    assert "<dynamic-code>" not in text
    assert "raise KeyError('raised in the cell')" in str(info.value)


def test_exception_with_custom_constructor_is_chained(runner: Runner) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.raise_custom, [(7,)])
    cause = info.value.__cause__
    assert isinstance(cause, tf.CustomError) and cause.code == 7
    assert info.value.failures[0].exception_type == "CustomError"


def test_system_exit_in_a_task_fails_that_task(runner: Runner) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.system_exit, [(1,)])
    assert info.value.failures[0].exception_type == "SystemExit"
    assert "task 1 called exit" in info.value.failures[0].message


def test_stop_at_first_failure(runner: Runner, shared_dir: Path) -> None:
    n = 60
    with pytest.raises(RemoteException) as info:
        runner.map(tf.touch_then_fail, [(str(shared_dir), i) for i in range(n)], on_error="stop")
    assert info.value.failed_indices == [0]
    ran = len(list(shared_dir.glob("*.ran")))
    assert 1 <= ran < n  # the rest were never started


@pytest.mark.parametrize("how, words", [("exit", "exited with code 3"),
                                        ("sigkill", "SIGKILL"), ("segfault", "SIGSEGV")])
def test_crashing_task_fails_alone(runner: Runner, how: str, words: str) -> None:
    if not runner.isolates_crashes:
        pytest.skip(f"{runner.mode} runs tasks in the caller's process: a crash ends the caller")
    with pytest.raises(RemoteException) as info:
        runner.map(tf.crash_on, [(i,) for i in range(7)], [{"how": how}] * 7)
    exc = info.value
    assert exc.failed_indices == [3]
    assert exc.failures[0].kind == "crash"
    assert words in exc.failures[0].message
    assert exc.results == [0, 1, 2, None, 4, 5, 6]


def test_unpicklable_argument_fails_its_task_only(runner: Runner) -> None:
    lock = threading.Lock()
    largs = [(1,), (lock,), (3,)]
    if not runner.pickles:
        assert runner.map(tf.identity, largs) == [1, lock, 3]
        return
    with pytest.raises(RemoteException) as info:
        runner.map(tf.identity, largs)
    exc = info.value
    assert exc.failed_indices == [1]
    assert exc.failures[0].kind == "pickling"
    assert "lock" in exc.failures[0].message.lower()
    assert exc.results == [1, None, 3]


def test_unpicklable_result_fails_its_task_only(runner: Runner) -> None:
    if not runner.pickles:
        assert runner.map(tf.return_lock, [(0,), (2,)]) == [0, 2]
        return
    with pytest.raises(RemoteException) as info:
        runner.map(tf.return_lock, [(0,), (1,), (2,)])
    exc = info.value
    assert exc.failed_indices == [1]
    assert "result" in exc.failures[0].message and "lock" in exc.failures[0].message.lower()
    assert exc.results == [0, None, 2]


def test_unpicklable_function_is_a_clear_error(runner: Runner) -> None:
    lock = threading.Lock()

    def holds_lock(x: int) -> int:
        with lock:
            return x

    if not runner.pickles:
        assert runner.map(holds_lock, [(1,)]) == [1]
        return
    with pytest.raises(TypeError, match=r"holds_lock.*cannot be pickled"):
        runner.map(holds_lock, [(1,)])


def test_prints_in_tasks_do_not_disturb_the_run(runner: Runner) -> None:
    assert runner.map(tf.noisy, [(i,) for i in range(4)]) == [0, 1, 2, 3]


def test_module_found_through_callers_sys_path(runner: Runner, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not runner.same_host_python:
        pytest.skip(f"{runner.mode} runs tasks with another host's Python and sys.path")
    (tmp_path / "helper_mod_for_remotemap.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import helper_mod_for_remotemap  # type: ignore[import-not-found]

    try:
        assert runner.map(helper_mod_for_remotemap.triple, [(1,), (2,)]) == [3, 6]
    finally:
        sys.modules.pop("helper_mod_for_remotemap", None)


def test_worker_killed_from_outside(runner: Runner, shared_dir: Path) -> None:
    """A worker killed by someone else mid-task: no hang, no lost or stale result."""
    if not runner.isolates_crashes:
        pytest.skip(f"{runner.mode} has no worker process to kill")
    stem = str(shared_dir / "pid")
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(f"{stem}.2"):
                pid = int(Path(f"{stem}.2").read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    largs = [(stem, i, 1.0 if i == 2 else 0.0) for i in range(5)]
    try:
        got: Any = runner.map(tf.pid_and_sleep, largs)
    except RemoteException as exc:
        got = exc
    thread.join()
    assert killed, "the task never started"
    if isinstance(got, RemoteException):
        # local_with_dumps, ssh: the task's own process died, so it fails with the signal.
        assert got.failed_indices == [2]
        assert "SIGKILL" in got.failures[0].message
        assert got.results == [0, 1, None, 3, 4]
    else:
        # local: joblib's pool broke; unfinished tasks were rerun one process each and the
        # killed task (which does not crash by itself) then succeeded.
        assert runner.mode == "local"
        assert got == [0, 1, 2, 3, 4]
