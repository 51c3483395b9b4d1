"""An odd failure stays one task's failure, the run goes on, and an Executor stays usable:
unloadable results, BaseExceptions, SystemExit while pickling, a raising ``__str__``, children
left running, closed stdout/stderr; every mode. A full disk or a removed run directory:
test_odd_failures_disk.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, TaskFailure
from remotemap.execution import dumps
from remotemap.integrity import write_key_file
from remotemap.protocol import (
    FUNCTION,
    chunk_name,
    create_local_run_dir,
    encode_chunk,
    open_outcome,
    seal_file,
)
from remotemap.tasks import Chunk
from tests import taskfuncs as tf
from tests.backends import Runner, runner_modes

#: The run key of the hand-made run directory (the batch worker reads it from a key file).
KEY = bytes(range(32))

#: What the worker does with a task (pickling its result or exception, its children, its
#: stdio) is not run on the cluster mode: cluster jobs run the same chunk code
#: (``remotemap.worker_run``) as the fork server of local_with_dumps and ssh, which prove it
#: here; the loop only cluster jobs add (``worker run``, several chunks in one process) is
#: tested directly by test_batch_worker_undoes_what_a_chunk_left, and the contract suite runs
#: on the cluster mode. Each of these cost a SLURM round (5-10 s) and proved nothing more.
WORKER_SIDE = pytest.mark.not_on_modes("cluster")


@WORKER_SIDE
def test_worker_side_cases_leave_out_the_cluster_only(request: pytest.FixtureRequest) -> None:
    modes = runner_modes(sys.modules[__name__], request.node)
    assert "cluster" not in modes
    assert {"local", "local_with_dumps", "ssh"} <= set(modes)


def _one_failure(info: pytest.ExceptionInfo[RemoteException], index: int) -> TaskFailure:
    exc = info.value
    assert exc.failed_indices == [index], str(exc)
    return exc.failures[0]


def _executor_goes_on(runner: Runner, func: Any, *args: Any) -> None:
    """An odd task in an Executor fails its own future; later ones still finish."""
    with runner.executor(max_workers=2) as ex:
        odd = ex.submit(func, *args)
        assert odd.exception(timeout=120) is not None
        later = [ex.submit(tf.square, i) for i in range(3)]
        assert [f.result(timeout=120) for f in later] == [0, 1, 4]


def test_result_that_cannot_be_loaded_fails_its_task(runner: Runner) -> None:
    largs = [(i, "unloadable") for i in range(3)]
    if not runner.pickles:  # serial: the value never leaves the caller's process
        assert isinstance(runner.map(tf.odd_value_on, largs)[1], tf.Unloadable)
        return
    with pytest.raises(RemoteException) as info:
        runner.map(tf.odd_value_on, largs)
    failure = _one_failure(info, 1)
    assert failure.kind == "pickling"
    assert "the result of task 1 cannot be unpickled" in failure.message
    assert "refusing to load" in failure.message
    assert info.value.results == [0, None, 2]
    _executor_goes_on(runner, tf.odd_value_on, 1, "unloadable")


def test_unloadable_result_in_a_stored_run_fails_again_alone(runner: Runner,
                                                              tmp_path: Path) -> None:
    if not runner.pickles:
        pytest.skip("serial: results are not pickled, so every one loads")
    largs = [(i, "unloadable") for i in range(3)]
    run_dir = tmp_path / "run"
    for _ in range(2):  # the first run, then its resume: task 1 alone fails each time
        with pytest.raises(RemoteException) as info:
            runner.map(tf.odd_value_on, largs, run_dir=str(run_dir))
        assert _one_failure(info, 1).kind == "pickling"
        assert info.value.results == [0, None, 2]


def test_result_of_a_class_the_caller_lacks_fails_its_task(runner: Runner,
                                                           shared_dir: Path) -> None:
    if not runner.pickles:
        pytest.skip("serial: the task runs in the caller, which has the class")
    with pytest.raises(RemoteException) as info:
        runner.map(tf.foreign_object_on, [(str(shared_dir), i) for i in range(3)])
    failure = _one_failure(info, 1)
    assert (failure.kind, failure.exception_type) == ("pickling", "ModuleNotFoundError")
    assert "task 1" in failure.message and "remotemap_foreign_" in failure.message
    assert info.value.results == [0, None, 2]


@pytest.mark.parametrize("kind", ["KeyboardInterrupt", "SystemExit", "GeneratorExit"])
def test_base_exception_from_a_task_fails_that_task(runner: Runner, kind: str) -> None:
    if runner.mode == "cluster" and kind != "SystemExit":
        pytest.skip("cluster jobs run local_with_dumps's worker code, which these kinds go "
                    "through there; SystemExit stands for the three (15 s each on SLURM)")
    with pytest.raises(RemoteException) as info:
        runner.map(tf.raise_base_on, [(i, kind) for i in range(3)])
    failure = _one_failure(info, 1)
    assert failure.exception_type == kind
    assert failure.message == f"task 1 raised {kind}"
    assert info.value.results == [0, None, 2]
    _executor_goes_on(runner, tf.raise_base_on, 1, kind)


@WORKER_SIDE
def test_system_exit_while_the_result_is_pickled(runner: Runner) -> None:
    largs = [(i, "exit_on_pickle") for i in range(3)]
    if not runner.pickles:
        assert isinstance(runner.map(tf.odd_value_on, largs)[1], tf.ExitOnPickle)
        return
    with pytest.raises(RemoteException) as info:
        runner.map(tf.odd_value_on, largs)
    failure = _one_failure(info, 1)
    assert (failure.kind, failure.exception_type) == ("pickling", "SystemExit")
    assert "the result of task 1 cannot be pickled" in failure.message
    assert info.value.results == [0, None, 2]
    _executor_goes_on(runner, tf.odd_value_on, 1, "exit_on_pickle")


def test_system_exit_while_an_argument_is_pickled(runner: Runner) -> None:
    largs = [(0,), (tf.ExitOnPickle(),), (2,)]
    if not runner.pickles:  # serial: the argument is passed as it is
        assert runner.map(tf.type_name, largs) == ["int", "ExitOnPickle", "int"]
        return
    with pytest.raises(RemoteException) as info:
        runner.map(tf.type_name, largs)
    failure = _one_failure(info, 1)
    assert (failure.kind, failure.exception_type) == ("pickling", "SystemExit")
    assert "the arguments of task 1 cannot be pickled" in failure.message
    assert info.value.results == ["int", None, "int"]
    _executor_goes_on(runner, tf.type_name, tf.ExitOnPickle())


@WORKER_SIDE
def test_exception_whose_str_raises_is_recorded(runner: Runner) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.raise_bad_str_on, [(i,) for i in range(3)])
    failure = _one_failure(info, 1)
    assert failure.exception_type == "BadStr"
    assert failure.message == "<str() of this BadStr raised ValueError>"
    assert "raise_bad_str_on" in failure.traceback
    assert info.value.results == [0, None, 2]
    assert "task 1" in str(info.value)


@WORKER_SIDE
def test_exception_that_exits_when_pickled_is_recorded(runner: Runner) -> None:
    """Its record keeps type, message and traceback; only the object itself stays behind."""
    with pytest.raises(RemoteException) as info:
        runner.map(tf.raise_exit_on_pickle_error_on, [(i,) for i in range(3)])
    failure = _one_failure(info, 1)
    assert (failure.exception_type, failure.message) == ("ExitOnPickleError", "task 1 failed")
    assert failure.exception() is None
    assert info.value.results == [0, None, 2]


def _alive(pid: int) -> bool:
    try:  # a zombie has ended: it only waits for its parent
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@WORKER_SIDE
def test_children_a_task_leaves_are_killed(runner: Runner) -> None:
    if not runner.isolates_crashes:
        pytest.skip("serial: tasks run in the caller's process, whose children are its own")
    pids = runner.map(tf.start_child, [(i,) for i in range(3)])
    try:
        give_up = time.monotonic() + 10
        while any(map(_alive, pids)) and time.monotonic() < give_up:
            time.sleep(0.05)
        assert [p for p in pids if _alive(p)] == [], "children outlived their tasks"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


_STDIO_WAYS = ["sys.stdout", "sys.stderr", "fd1", "fd2"]

_TWO_CALLS = textwrap.dedent(
    """
    import sys
    from remotemap import remote_map
    from tests import taskfuncs as tf

    how, mode = sys.argv[1:3]
    options = {"n_jobs": 2} if mode == "local" else {}
    remote_map(tf.close_stdio, [(how,)] * 4, mode=mode, progress=False, **options)
    pids = remote_map(tf.print_pid, [(i,) for i in range(4)], mode=mode, progress=False,
                      **options)
    print("second call ran", len(pids), "tasks", flush=True)
    """)


@WORKER_SIDE
@pytest.mark.parametrize("how", _STDIO_WAYS)
def test_closed_stdio_does_not_break_the_next_call(runner: Runner, how: str,
                                                   tmp_path: Path) -> None:
    if runner.mode in ("serial", "local"):
        # These run tasks in processes that live on (the caller; loky's workers): run the two
        # calls in a real interpreter whose stdout and stderr the test can read afterwards.
        script = tmp_path / "two_calls.py"
        script.write_text(_TWO_CALLS)
        root = str(Path(__file__).resolve().parent.parent)
        done = subprocess.run([sys.executable, str(script), how, runner.mode], cwd=root,
                              env={**os.environ, "PYTHONPATH": root}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "second call ran 4 tasks" in done.stdout
        assert done.stdout.count("prints") == 4 and done.stderr.count("warns") == 4
        return
    first = set(runner.map(tf.close_stdio, [(how,)] * 4))
    second = runner.map(tf.print_pid, [(i,) for i in range(4)])
    assert len(second) == 4 and len(first) >= 1


def test_the_callers_own_ctrl_c_still_stops_a_serial_run(tmp_path: Path) -> None:
    """A real SIGINT to the caller during a serial task stops the run (it is not taken for
    that task's failure), while a task raising KeyboardInterrupt itself is its failure."""
    marker = tmp_path / "started"
    script = tmp_path / "serial_ctrl_c.py"
    script.write_text(textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from remotemap import RemoteException, remote_map
        from tests import taskfuncs as tf

        try:
            remote_map(tf.raise_base_on, [(i, "KeyboardInterrupt") for i in range(3)],
                       mode="serial", progress=False)
        except RemoteException as exc:
            print("own KeyboardInterrupt failed task", exc.failed_indices, flush=True)

        def wait(i):
            Path({str(marker)!r}).touch()
            time.sleep(60)

        try:
            remote_map(wait, [(i,) for i in range(3)], mode="serial", progress=False)
        except KeyboardInterrupt:
            print("KeyboardInterrupt reached the caller", flush=True)
            sys.exit(130)
        """))
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=root, text=True,
                            env={**os.environ, "PYTHONPATH": root},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        give_up = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < give_up and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "own KeyboardInterrupt failed task [1]" in out
    assert "KeyboardInterrupt reached the caller" in out


def test_stored_run_goes_on_when_a_result_cannot_be_stored(runner: Runner,
                                                          tmp_path: Path) -> None:
    """With ``run_dir``, each result is pickled into the store, in serial mode too: one whose
    pickling raises SystemExit fails its own task instead of ending the caller."""
    largs = [(i, "exit_on_pickle") for i in range(3)]
    with pytest.raises(RemoteException) as info:
        runner.map(tf.odd_value_on, largs, run_dir=str(tmp_path / "run"))
    failure = _one_failure(info, 1)
    assert (failure.kind, failure.exception_type) == ("pickling", "SystemExit")
    assert info.value.results == [0, None, 2]


@pytest.mark.parametrize("how", _STDIO_WAYS)
def test_batch_worker_undoes_what_a_chunk_left(tmp_path: Path, how: str) -> None:
    """``python -m remotemap.worker run`` (a cluster job) runs its chunks in one process: a
    chunk's leftover child is killed, and its closed stdout or stderr is back for the next."""
    layout, rundir = create_local_run_dir(str(tmp_path))
    rundir.write(FUNCTION, seal_file(KEY, FUNCTION, dumps(tf.leave_behind)))
    for x in (0, 1):
        name = chunk_name(x)
        rundir.write(name, seal_file(KEY, name, encode_chunk("tok", Chunk(x, [x], [(how, x)],
                                                                          [{}]))))
    rundir.close()
    keys = tmp_path / "keys"
    write_key_file(str(keys / "run.key"), KEY)
    done = subprocess.run([sys.executable, "-m", "remotemap.worker", "run", layout.root,
                           "--key-file", str(keys / "run.key"), "0", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = (open_outcome(KEY, x, Path(layout.outcome(x)).read_bytes(), "tok",
                                  layout.outcome(x)) for x in (0, 1))
    assert first is not None and second is not None
    assert second.failures == [] and second.indices == [1]
    assert "task 1 prints" in done.stdout and "task 1 warns" in done.stderr
    (child,) = first.values
    give_up = time.monotonic() + 5
    while _alive(child) and time.monotonic() < give_up:
        time.sleep(0.05)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child the first chunk left outlived its chunk")
