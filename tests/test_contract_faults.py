"""Timeouts, retries, environment, futures and resumable runs, on every backend."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotemap import RemoteException, RemoteTraceback, as_completed
from tests import taskfuncs as tf
from tests.backends import Runner

#: Every mode runs this module, those of ``tests.backends.CONTRACT_ONLY`` included.
CONTRACT_SUITE = True


def test_timeout_fails_the_slow_task_only(runner: Runner) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteException) as info:
        runner.map(tf.sleep_for, [(0, 0.0), (1, 30.0), (2, 0.0)], timeout=1.0)
    exc = info.value
    assert exc.failed_indices == [1]
    assert exc.failures[0].kind == "timeout"
    assert exc.results == [0, None, 2]
    assert time.monotonic() - started < 20  # the 30 s task did not run to its end


def test_retries_rerun_only_failed_attempts(runner: Runner, shared_dir: Path) -> None:
    largs = [(str(shared_dir), i, 2 if i == 1 else 0) for i in range(3)]
    assert runner.map(tf.fail_until, largs, retries=2, backoff=0.05) == [1, 3, 1]
    attempts = sorted(p.name for p in shared_dir.iterdir())
    assert attempts == ["0.1", "1.1", "1.2", "1.3", "2.1"]  # task 1 three times, others once


def test_retries_exhausted_record_every_attempt(runner: Runner, shared_dir: Path) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.fail_until, [(str(shared_dir), 0, 99)], retries=2, backoff=0.01)
    failure = info.value.failures[0]
    assert failure.attempts == 3
    assert [p.message for p in failure.previous] == ["attempt 1 of task 0 fails",
                                                     "attempt 2 of task 0 fails"]
    assert failure.message == "attempt 3 of task 0 fails"
    assert "after 3 attempts" in str(info.value)


def test_env_is_set_where_tasks_run_only(runner: Runner) -> None:
    assert "REMOTEMAP_TEST_ENV" not in os.environ
    got = runner.map(tf.read_env, [("REMOTEMAP_TEST_ENV",)] * 3,
                     env={"REMOTEMAP_TEST_ENV": "3 threads"})
    assert got == ["3 threads"] * 3
    assert "REMOTEMAP_TEST_ENV" not in os.environ


def test_memory_refused_by_the_os_fails_that_task(runner: Runner) -> None:
    if not runner.isolates_crashes:
        pytest.skip(f"{runner.mode} would cap the caller's own memory")
    with pytest.raises(RemoteException) as info:
        runner.map(tf.allocate_beyond, [(2048,)])
    assert info.value.failures[0].exception_type == "MemoryError"
    assert runner.map(tf.square, [(3,)]) == [9]  # and the backend still works


def test_imap_yields_every_result_once(runner: Runner) -> None:
    got = list(runner.imap(tf.square, [(i,) for i in range(20)]))
    assert sorted(got) == [(i, i * i) for i in range(20)]


def test_imap_raises_after_yielding_the_successes(runner: Runner) -> None:
    seen = []
    with pytest.raises(RemoteException) as info:
        for index, value in runner.imap(tf.fail_on, [(i,) for i in range(4)]):
            seen.append((index, value))
    assert sorted(seen) == [(0, 0), (1, 1), (3, 3)]
    assert info.value.failed_indices == [2]


def test_executor_futures(runner: Runner) -> None:
    with runner.executor(max_workers=2) as ex:
        futures = [ex.submit(tf.fail_on, i) for i in range(6)]
        done = {f.result() for f in as_completed(futures) if f.exception() is None}
        assert done == {0, 1, 3, 4, 5}
        error = futures[2].exception()
        assert type(error) is ValueError and error.args == ("bad value 2",)
        assert isinstance(error.__cause__, RemoteTraceback)
        assert error.__cause__.failure.index == 2
        assert error.__cause__.failure.message == "bad value 2"
        assert list(ex.map(tf.add, [1, 2], [10, 20])) == [11, 22]
        ex.max_workers = 1  # applies to later submissions
        assert ex.submit(tf.square, 7).result(timeout=60) == 49
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(tf.square, 1)


def test_executor_cancel_pending_on_shutdown(runner: Runner) -> None:
    ex = runner.executor(max_workers=1)
    first = ex.submit(tf.sleep_for, 0, 0.5)
    rest = [ex.submit(tf.sleep_for, i, 0.5) for i in range(1, 6)]
    deadline = time.monotonic() + 30
    while not (first.running() or first.done()) and time.monotonic() < deadline:
        time.sleep(0.01)  # the first task has been handed to the backend
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() == 0
    assert sum(f.cancelled() for f in rest) >= 3


def test_resume_reruns_only_what_failed(runner: Runner, shared_dir: Path, tmp_path: Path) -> None:
    counters = shared_dir / "counters"
    counters.mkdir(mode=0o777)
    counters.chmod(0o777)
    broken = shared_dir / "broken"
    broken.touch()
    largs = [(str(counters), i, str(broken) if i in (2, 5) else "") for i in range(8)]
    with pytest.raises(RemoteException) as info:
        runner.map(tf.count_runs, largs, run_dir=tmp_path / "run")
    assert info.value.failed_indices == [2, 5]
    assert info.value.run_dir == (tmp_path / "run").resolve()
    broken.unlink()
    got = runner.map(tf.count_runs, largs, resume=tmp_path / "run")
    assert got == [i * 10 for i in range(8)]
    runs = sorted(int(p.name.split(".")[0]) for p in counters.iterdir())
    assert runs == [0, 1, 2, 2, 3, 4, 5, 5, 6, 7]  # only 2 and 5 ran twice


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A child of this process's memory cgroup, limited to 64 MiB (cgroup v1 or v2)."""
    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = [line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"]
    if v1:
        base, limit_file = Path("/sys/fs/cgroup/memory" + v1[0]), "memory.limit_in_bytes"
    else:
        v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
        base, limit_file = Path("/sys/fs/cgroup" + (v2[0] if v2 else "/")), "memory.max"
    group = base / f"remotemap-oom-{os.getpid()}"
    try:
        group.mkdir()
        (group / limit_file).write_text(str(64 << 20))
    except OSError as exc:
        pytest.skip(f"no memory cgroup can be made here ({exc}), so the OOM killer cannot be "
                    "aimed at one task")
    yield group
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)  # the killed process is still being reaped


def test_task_killed_by_the_oom_killer_fails_alone(runner: Runner, memory_cgroup: Path) -> None:
    if not runner.isolates_crashes or not runner.same_host_python:
        pytest.skip(f"{runner.mode}: the task must be a process of this machine that root owns "
                    "and that is not the caller")
    with pytest.raises(RemoteException) as info:
        runner.map(tf.allocate_in_cgroup, [(str(memory_cgroup / "cgroup.procs"), i)
                                          for i in range(3)])
    exc = info.value
    assert exc.failed_indices == [1]
    assert exc.failures[0].kind == "crash" and "SIGKILL" in exc.failures[0].message
    assert exc.results == [0, None, 2]
