"""``Executor`` shutdown, interpreter exit and broken tasks, as CPython's test_shutdown and
test_deadlock check them (see test_futures_contract.py for what is left out, and why).

The exit tests run real caller scripts: work submitted and not waited for must still be done
when the interpreter exits, as concurrent.futures promises.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures
from pathlib import Path
from pickle import PicklingError, UnpicklingError
from typing import Any

import pytest

from remotemap import RemoteException, RemoteTraceback
from tests.backends import Runner
from tests.futures_support import MODES

# -- tasks and objects that break at each step of a task's trip (CPython's test_deadlock) -------


def crash(delay: float = 0.0) -> None:
    time.sleep(delay)
    faulthandler.disable()  # no dump on stderr: the crash is expected
    ctypes.string_at(0)  # a real segmentation fault


def crash_with_data(data: str) -> None:
    crash()


def exit_now() -> None:
    sys.exit(1)


def raise_error(error: type[Exception]) -> None:
    raise error()


def make(cls: type) -> Any:
    return cls()


class CrashAtPickle:
    def __reduce__(self) -> Any:
        crash()


class CrashAtUnpickle:
    def __reduce__(self) -> Any:
        return crash, ()


class ExitAtPickle:
    def __reduce__(self) -> Any:
        exit_now()


class ExitAtUnpickle:
    def __reduce__(self) -> Any:
        return exit_now, ()


class ErrorAtPickle:
    def __reduce__(self) -> Any:
        raise PicklingError("Error in pickle")


class ErrorAtUnpickle:
    def __reduce__(self) -> Any:
        return raise_error, (UnpicklingError,)


#: The modes whose tasks run in other processes (serial runs them in this one).
OUT_OF_PROCESS = pytest.mark.parametrize("mode_runner", ["local", "local_with_dumps"],
                                         indirect=True)


def _dispatchers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("remotemap-executor")}


# -- test_shutdown ----------------------------------------------------------------------------

def test_run_after_shutdown(mode_runner: Runner) -> None:
    ex = mode_runner.executor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(pow, 2, 5)
    with pytest.raises(RuntimeError, match="shut down"):
        ex.map(pow, [2], [5])


def test_shutdown_waits_for_everything_submitted(mode_runner: Runner) -> None:
    ex = mode_runner.executor()
    fs = [ex.submit(time.sleep, 0.05) for _ in range(20)]
    ex.shutdown()
    assert all(f.done() for f in fs)
    assert [f.result() for f in fs] == [None] * 20


def test_cancel_futures(mode_runner: Runner) -> None:
    ex = mode_runner.executor()
    fs = [ex.submit(time.sleep, 0.1) for _ in range(50)]
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    others = [f for f in fs if not f.cancelled()]
    assert len(cancelled) > 20
    assert others, "the task already running when shutdown came must finish"
    assert all(f.done() and f.exception() is None for f in others)


def test_shutdown_after_a_cancelled_submission_does_not_hang(mode_runner: Runner) -> None:
    ex = mode_runner.executor(max_workers=1)
    assert ex.submit(int).result() == 0
    ex.submit(int).cancel()
    stopper = threading.Thread(target=ex.shutdown)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive(), "shutdown(wait=True) hung"


def test_context_manager_shutdown(mode_runner: Runner) -> None:
    before = _dispatchers()
    with mode_runner.executor() as ex:
        assert list(ex.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert _dispatchers() - before == set(), "the dispatcher thread outlived the with block"


@pytest.mark.parametrize("how", ["del", "shutdown(wait=False)"])
def test_dropped_or_not_waited_for_still_finishes(mode_runner: Runner, how: str) -> None:
    before = _dispatchers()
    ex = mode_runner.executor()
    results = ex.map(abs, range(-5, 5))
    started = _dispatchers() - before
    assert len(started) == 1
    if how == "del":
        del ex
        gc.collect()
    else:
        ex.shutdown(wait=False)
    thread = started.pop()
    thread.join(30)
    assert not thread.is_alive(), f"after {how} the dispatcher thread never ended"
    assert list(results) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]  # computed before it ended


# -- the interpreter exits: a real caller script ----------------------------------------------

_CALLER = textwrap.dedent(
    """
    import atexit, pathlib, sys, time
    from remotemap import Executor

    def touch(marker_dir, i):
        time.sleep(0.05)
        pathlib.Path(marker_dir, f"{i}.done").touch()

    marker_dir, mode, how = sys.argv[1:4]
    options = {} if mode == "serial" else {"n_jobs": 2}
    if how == "after another mode":  # an executor of another mode was set up first
        Executor("serial").submit(int).result()
    ex = Executor(mode, max_workers=1, **options)  # one task at a time: most are queued
    """)

_ENDINGS = {
    "end": "",
    "shutdown(wait=False)": "ex.shutdown(wait=False)\n",
    "after another mode": "",
    "shutdown(wait=False, cancel_futures=True)": "ex.shutdown(wait=False, cancel_futures=True)\n",
}


def _run_caller(tmp_path: Path, body: str, *argv: str, markers: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``body`` after :data:`_CALLER`; the tasks leave their markers in ``markers``
    (default: ``tmp_path``)."""
    script = tmp_path / "caller.py"
    script.write_text(_CALLER + body)
    return subprocess.run([sys.executable, str(script), str(markers or tmp_path), *argv],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["end", "shutdown(wait=False)", "after another mode"])
def test_work_submitted_runs_before_the_interpreter_exits(tmp_path: Path, mode: str,
                                                          how: str) -> None:
    body = "for i in range(8):\n    ex.submit(touch, marker_dir, i)\n" + _ENDINGS[how]
    ran = _run_caller(tmp_path, body, mode, how)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert sorted(p.name for p in tmp_path.glob("*.done")) == [f"{i}.done" for i in range(8)]


@pytest.mark.parametrize("how", ["end", "shutdown(wait=False)"])
def test_work_submitted_runs_before_the_interpreter_exits_on_ssh(
        sshd_host: Any, remote_python: Path, shared_dir: Path, tmp_path: Path, how: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[ssh]\nhosts = ["{sshd_host.alias}"]\nssh_config = '
                      f'"{sshd_host.ssh_config}"\npython = "{remote_python}"\n')
    body = "for i in range(8):\n    ex.submit(touch, marker_dir, i)\n" + _ENDINGS[how]
    ran = _run_caller(tmp_path, body, "ssh", how, markers=shared_dir,
                      env={**os.environ, "REMOTEMAP_CONFIG": str(config)})
    assert (ran.returncode, ran.stderr) == (0, "")
    assert sorted(p.name for p in shared_dir.glob("*.done")) == [f"{i}.done" for i in range(8)]


@pytest.mark.parametrize("mode", MODES)
def test_cancel_futures_at_exit_drops_only_what_had_not_started(tmp_path: Path,
                                                                mode: str) -> None:
    body = ("for i in range(8):\n    ex.submit(touch, marker_dir, i)\n"
            + _ENDINGS["shutdown(wait=False, cancel_futures=True)"])
    ran = _run_caller(tmp_path, body, mode, "cancel")
    assert (ran.returncode, ran.stderr) == (0, "")
    # The first task was running when submit() returned: it ends; the queued ones were dropped.
    assert "0.done" in {p.name for p in tmp_path.glob("*.done")}
    assert len(list(tmp_path.glob("*.done"))) < 8


@pytest.mark.parametrize("mode", MODES)
def test_submit_after_interpreter_shutdown(tmp_path: Path, mode: str) -> None:
    body = textwrap.dedent(
        """
        @atexit.register
        def run_last():
            try:
                ex.submit(touch, marker_dir, 99)
            except RuntimeError:
                print("runtime-error")
                raise

        ex.submit(int, 42).result()
        """)
    ran = _run_caller(tmp_path, body, mode, "atexit")
    assert ran.stdout.strip() == "runtime-error"
    assert "RuntimeError: cannot submit to an Executor after interpreter shutdown" in ran.stderr
    assert not (tmp_path / "99.done").exists()


# -- test_deadlock: a task that breaks on its way fails; nothing hangs -------------------------

#: name: (function, arguments, what result() raises); the executor then still works.
_BREAKS: dict[str, tuple[Any, tuple[Any, ...], type[BaseException]]] = {
    "error at task pickle": (id, (ErrorAtPickle(),), PicklingError),
    "exit at task unpickle": (id, (ExitAtUnpickle(),), SystemExit),
    "error at task unpickle": (id, (ErrorAtUnpickle(),), UnpicklingError),
    "crash at task unpickle": (id, (CrashAtUnpickle(),), RemoteException),
    "crash during the call": (crash, (), RemoteException),
    "exit during the call": (exit_now, (), SystemExit),
    "error during the call": (raise_error, (RuntimeError,), RuntimeError),
    "crash at result pickle": (make, (CrashAtPickle,), RemoteException),
    "exit at result pickle": (make, (ExitAtPickle,), SystemExit),
    "error at result pickle": (make, (ErrorAtPickle,), PicklingError),
    "error at result unpickle": (make, (ErrorAtUnpickle,), UnpicklingError),
    "exit at result unpickle": (make, (ExitAtUnpickle,), SystemExit),
}


@OUT_OF_PROCESS
@pytest.mark.parametrize("name", list(_BREAKS))
def test_a_broken_task_fails_without_deadlock(mode_runner: Runner, name: str) -> None:
    fn, args, expected = _BREAKS[name]
    ex = mode_runner.executor()
    future = ex.submit(fn, *args)
    with pytest.raises(BaseException) as info:
        future.result(timeout=60)
    error = info.value
    assert not isinstance(error, futures.TimeoutError), f"{name}: the future never finished"
    assert type(error) is expected, f"{name}: {error!r}"
    if expected is RemoteException:
        assert error.failures[0].kind == "crash"  # type: ignore[attr-defined]
    else:
        assert isinstance(error.__cause__, RemoteTraceback)
    assert ex.submit(pow, 2, 8).result(timeout=60) == 256
    ex.shutdown(wait=True)


@pytest.mark.parametrize("mode_runner", ["serial"], indirect=True)
def test_exit_during_the_call_in_process(mode_runner: Runner) -> None:
    with mode_runner.executor() as ex:
        with pytest.raises(SystemExit) as info:
            ex.submit(exit_now).result(timeout=60)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert ex.submit(pow, 2, 8).result() == 256


@OUT_OF_PROCESS
def test_shutdown_while_a_task_crashes(mode_runner: Runner) -> None:
    with mode_runner.executor() as ex:
        future = ex.submit(crash, 0.1)
        ex.shutdown(wait=True)
        with pytest.raises(RemoteException) as info:
            future.result()
    assert info.value.failures[0].kind == "crash"


@OUT_OF_PROCESS
def test_shutdown_no_wait_with_an_unpicklable_argument(mode_runner: Runner) -> None:
    ex = mode_runner.executor()
    assert ex.submit(int, 42).result() == 42  # the backend is up
    future = ex.submit(id, ErrorAtPickle())
    ex.shutdown(wait=False)
    with pytest.raises(PicklingError):
        future.result(timeout=60)


@OUT_OF_PROCESS
def test_crashes_with_big_arguments(mode_runner: Runner) -> None:
    data = "a" * (1 << 20)  # more than a pipe holds
    with mode_runner.executor() as ex, pytest.raises(RemoteException) as info:
        list(ex.map(crash_with_data, [data] * 10))
    assert info.value.failures[0].kind == "crash"
