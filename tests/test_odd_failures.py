"""An odd failure stays one task's failure, the run goes on, and an Executor stays usable:
unloadable results, BaseExceptions, SystemExit while pickling, a raising ``__str__``, a full
disk or removed run directory, children left running, closed stdout/stderr; every mode."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, TaskFailure
from remotemap.backends.cluster.files import ClusterError
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
from remotemap.runs import RunStore
from remotemap.tasks import Chunk
from tests import taskfuncs as tf
from tests.backends import Runner

#: The run key of the hand-made run directory (the batch worker reads it from a key file).
KEY = bytes(range(32))


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
    with pytest.raises(RemoteException) as info:
        runner.map(tf.raise_base_on, [(i, kind) for i in range(3)])
    failure = _one_failure(info, 1)
    assert failure.exception_type == kind
    assert failure.message == f"task 1 raised {kind}"
    assert info.value.results == [0, None, 2]
    _executor_goes_on(runner, tf.raise_base_on, 1, kind)


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


def test_exception_whose_str_raises_is_recorded(runner: Runner) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.raise_bad_str_on, [(i,) for i in range(3)])
    failure = _one_failure(info, 1)
    assert failure.exception_type == "BadStr"
    assert failure.message == "<str() of this BadStr raised ValueError>"
    assert "raise_bad_str_on" in failure.traceback
    assert info.value.results == [0, None, 2]
    assert "task 1" in str(info.value)


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


# -- a full disk, a removed run directory ------------------------------------------------------

#: The option naming where each mode keeps its run files.
_DIR_OPTION = {"local_with_dumps": "temp_dir", "ssh": "remote_dir", "cluster": "shared_dir"}


def _dir_options(runner: Runner, path: Path) -> dict[str, Any]:
    """Run files in ``path``, one task at a time where the mode lets us say so."""
    one_at_a_time = {} if runner.mode == "cluster" else {"n_jobs": 1}
    return {_DIR_OPTION[runner.mode]: str(path), **one_at_a_time}


def _owner(runner: Runner, request: pytest.FixtureRequest) -> tuple[int, int]:
    """Who runs the tasks, so owns the run files: the ssh test user on ssh, else us."""
    if runner.mode == "ssh":
        user = request.getfixturevalue("ssh_test_user")
        return user.uid, user.gid
    return os.getuid(), os.getgid()


@pytest.fixture
def files_dir(runner: Runner, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A private directory for the run's files, owned by whoever runs the tasks, on a path
    that user can reach."""
    if runner.mode not in _DIR_OPTION:
        pytest.skip(f"{runner.mode} keeps no run files on disk")
    parent = Path(tempfile.mkdtemp(prefix="remotemap-odd-"))
    parent.chmod(0o711)
    path = parent / "files"
    path.mkdir(mode=0o700)
    os.chown(path, *_owner(runner, request))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def small_disk(files_dir: Path) -> Path:
    """``files_dir`` made a real 1 MiB file system (tmpfs; unmounted by ``files_dir``)."""
    st = files_dir.stat()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o",
                           f"size=1m,mode=0700,uid={st.st_uid},gid={st.st_gid}", "tmpfs",
                           str(files_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return files_dir


def _cluster_run_fails_and_keeps_results(runner: Runner, files_dir: Path, run_dir: Path,
                                         func: Any, largs: list[tuple[Any, ...]],
                                         expected: Callable[[int], Any]) -> None:
    """On cluster the run's engine keeps its state in the run files: when they cannot be
    written it stops, and the whole run ends with an error naming the directory. The results
    that came back before are kept in ``run_dir``."""
    with pytest.raises((ClusterError, RemoteException)) as info:
        runner.map(func, largs, run_dir=str(run_dir), **_dir_options(runner, files_dir))
    assert str(files_dir) in str(info.value), str(info.value)
    stored = RunStore(run_dir).load()
    assert all(value == expected(i) for i, value in stored.values.items())


def test_full_disk_fails_the_tasks_it_stops_and_keeps_the_rest(runner: Runner,
                                                               small_disk: Path,
                                                               tmp_path: Path) -> None:
    """The run files on a 1 MiB disk: results of 300 KB each fill it."""
    largs = [(i, 300_000) for i in range(6)]
    if runner.mode == "cluster":
        _cluster_run_fails_and_keeps_results(runner, small_disk, tmp_path / "run",
                                             tf.block_of, largs, lambda i: bytes([i]) * 300_000)
        return
    options = _dir_options(runner, small_disk)
    with pytest.raises(RemoteException) as info:
        runner.map(tf.block_of, largs, **options)
    exc = info.value
    done = [i for i, r in enumerate(exc.results) if r is not None]
    assert done and exc.failed_indices, str(exc)
    assert sorted(done + exc.failed_indices) == list(range(6))
    for i in done:
        assert exc.results[i] == bytes([i]) * 300_000
    for failure in exc.failures:
        assert str(small_disk) in failure.message, failure.message
    assert "No space left on device" in str(exc)
    # The run removed its files: there is room again.
    assert runner.map(tf.square, [(3,)], **options) == [9]


def test_run_directory_removed_mid_run(runner: Runner, files_dir: Path,
                                      tmp_path: Path) -> None:
    """A task removes the run's directory: the tasks after it fail naming the path; those
    before it keep their results."""
    largs = [(str(files_dir), i) for i in range(5)]
    if runner.mode == "cluster":
        _cluster_run_fails_and_keeps_results(runner, files_dir, tmp_path / "run",
                                             tf.remove_contents_on, largs, lambda i: i)
        return
    options = _dir_options(runner, files_dir)
    with pytest.raises(RemoteException) as info:
        runner.map(tf.remove_contents_on, largs, **options)
    exc = info.value
    assert exc.results[:2] == [0, 1]
    if runner.mode == "ssh":
        # ssh takes a failed upload for a lost link: it reconnects, with a new run directory
        # where the later tasks may run. Task 2's value could not be written back.
        assert 2 in exc.failed_indices, str(exc)
    else:
        assert exc.failed_indices == [2, 3, 4], str(exc)
    for index, value in enumerate(exc.results):  # each task: its value, or its failure
        assert (value == index) != (index in exc.failed_indices)
    for failure in exc.failures:
        assert str(files_dir) in failure.message, failure.message


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
