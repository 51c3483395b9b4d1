"""Mode ``dask`` beyond the contract suite: its config, an unreachable scheduler, a dask worker
killed mid-chunk, and what a run shows and stores. Against a real ``LocalCluster`` on loopback
(the ``dask_scheduler`` fixture of tests/backends.py); the contract suite covers the rest."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from remotemap import ModeName, RemoteException, remote_map
from remotemap.config.modes import BUILTIN_MODES, mode_target
from remotemap.errors import BackendUnavailable, ConfigError
from tests import taskfuncs as tf

REPO = Path(__file__).resolve().parent.parent

#: A mode from an entry point is checked at run time: type checkers take it as ModeName.
DASK = ModeName("dask")


def parent_pid_and_sleep(path: str, x: int, seconds: float) -> int:
    """Write the pid of this process's parent (the dask worker) to ``path``.x, then sleep,
    unless ``path``.x exists already (a second attempt)."""
    target = Path(f"{path}.{x}")
    if not target.exists():
        Path(f"{path}.{x}.tmp").write_text(str(os.getppid()))
        os.replace(f"{path}.{x}.tmp", target)
        time.sleep(seconds)
    return x


def test_dask_ships_as_an_entry_point_and_loads_nothing_heavy_to_check_a_config(
        tmp_path: Path) -> None:
    assert "dask" not in BUILTIN_MODES
    assert mode_target("dask") == "remotemap.backends.dask:DaskBackend"
    config = tmp_path / "c.toml"
    config.write_text('[dask]\nscheduler = "tcp://127.0.0.1:8786"\nn_jobs = 2\n')
    probe = ("import sys\nfrom remotemap.config import load_config\n"
             "print(load_config(sys.argv[1]).get('dask.n_jobs'), "
             "sorted({'dask', 'distributed'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == ["2", "[]"]


def test_missing_scheduler_names_the_key_and_the_file(isolated_config: Path) -> None:
    with pytest.raises(ConfigError, match=r"dask\.scheduler") as info:
        remote_map(tf.square, [(1,)], mode=DASK, progress=False)
    assert info.value.key == "dask.scheduler"
    assert info.value.path == isolated_config / "remotemap" / "config.toml"
    assert str(info.value.path) in str(info.value)


def test_unreachable_scheduler_is_unavailable_within_the_connect_timeout() -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"dask scheduler at {address}.* within 1 s"):
        remote_map(tf.square, [(1,)], mode=DASK, scheduler=address, connect_timeout=1,
                   progress=False)
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("retries", [0, 1])
def test_a_dask_worker_killed_mid_chunk(dask_scheduler: str, tmp_path: Path,
                                        retries: int) -> None:
    """Its chunk fails with kind "lost" (the scheduler's re-run does not run it); with a retry,
    the driver runs it again; a stored run resumes it alone."""
    from distributed import Client

    stem = str(tmp_path / "worker")
    threading.Thread(target=_kill_when_written, args=(f"{stem}.2",), daemon=True).start()
    largs = [(stem, i, 30.0 if i == 2 else 0.0) for i in range(4)]
    options: dict[str, Any] = {"mode": "dask", "scheduler": dask_scheduler, "chunksize": 1,
                               "progress": False, "retries": retries,
                               "run_dir": tmp_path / "run"}
    try:
        if retries:
            assert remote_map(parent_pid_and_sleep, largs, **options) == [0, 1, 2, 3]
            return
        with pytest.raises(RemoteException) as info:
            remote_map(parent_pid_and_sleep, largs, **options)
        failure = info.value.failures[0]
        assert info.value.failed_indices == [2] and failure.kind == "lost"
        assert "lost with its dask worker" in failure.message
        assert info.value.results == [0, 1, None, 3]
        Path(f"{stem}.0").unlink()  # were task 0 to run again, it would write this anew
        del options["run_dir"]
        assert remote_map(parent_pid_and_sleep, largs, resume=tmp_path / "run",
                          **options) == [0, 1, 2, 3]
        assert not Path(f"{stem}.0").exists()
    finally:
        with Client(dask_scheduler, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


def _kill_when_written(path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(path):
            # Let the caller fetch the other chunks' results first: a worker killed while it
            # holds one loses it too (dask would compute it again: that chunk fails "lost").
            time.sleep(1.0)
            os.kill(int(Path(path).read_text()), signal.SIGKILL)
            return
        time.sleep(0.02)


def test_stopping_early_kills_the_running_tasks(dask_scheduler: str, tmp_path: Path) -> None:
    stem = str(tmp_path / "pid")
    largs = [(stem, 0, 30.0), (stem, 1, 0.0)]
    with pytest.raises(RemoteException):
        remote_map(_sleep_or_fail, largs, mode=DASK, scheduler=dask_scheduler,
                   chunksize=1, on_error="stop", progress=False)
    pid = int(Path(f"{stem}.0").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the running task's process outlived the run"


def _sleep_or_fail(path: str, x: int, seconds: float) -> int:
    if x == 1:
        while not os.path.exists(f"{path}.0"):  # fail once task 0 is surely running
            time.sleep(0.01)
        raise RuntimeError("task 1 fails")
    return tf.pid_and_sleep(path, x, seconds)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_progress_names_the_mode_and_counts_every_task(dask_scheduler: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert remote_map(tf.square, [(i,) for i in range(12)], mode=DASK,
                      scheduler=dask_scheduler, progress=True) == [i * i for i in range(12)]
    # The bar starts at 0/12 and leaves the run's summary line when it ends.
    assert "0/12" in err.getvalue()
    assert "remotemap dask: 12 tasks in" in err.getvalue()


def test_a_crash_in_a_chunk_of_many_tasks_fails_that_task_only(dask_scheduler: str) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(tf.crash_on, [(i,) for i in range(5)], [{"how": "exit"}] * 5, mode=DASK,
                   scheduler=dask_scheduler, chunksize=5, progress=False)
    assert info.value.failed_indices == [3]
    assert "exited with code 3" in info.value.failures[0].message
    assert info.value.results == [0, 1, 2, None, 4]


def test_a_scheduler_killed_mid_run_fails_the_tasks_as_lost_not_a_hang(tmp_path: Path) -> None:
    """Then the worker is SIGKILLed mid-chunk too: the chunk's process removes the task's
    temporary directory, which the dead worker cannot."""
    from distributed import Client

    # A scheduler and a worker of their own, as `dask scheduler` and `dask worker` start them;
    # the worker's temp dir is this test's, to see what it leaves there.
    info_file, worker_tmp = tmp_path / "scheduler.json", tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    cli = [sys.executable, "-m"]
    scheduler = subprocess.Popen([*cli, "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file",
                                  str(info_file)], stderr=subprocess.DEVNULL)
    worker = None
    try:
        worker = subprocess.Popen([*cli, "distributed.cli.dask_worker", "--no-nanny",
                                   "--nthreads", "1", "--no-dashboard", "--scheduler-file",
                                   str(info_file)], stderr=subprocess.DEVNULL,
                                  env={**os.environ, "TMPDIR": str(worker_tmp)})
        with Client(scheduler_file=str(info_file), timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=30)
            address = client.scheduler.address
        killer = threading.Timer(2.0, scheduler.kill)
        killer.start()
        started = time.monotonic()
        with pytest.raises(RemoteException) as info:
            remote_map(tf.sleep_for, [(0, 30.0), (1, 30.0)], mode=DASK, progress=False,
                       scheduler=address, connect_timeout=2)
        # The client tries to reconnect for connect_timeout seconds, then gives the run up.
        assert time.monotonic() - started < 2.0 + 2.0 + 5
        killer.join()
        assert info.value.failed_indices == [0, 1]
        assert {f.kind for f in info.value.failures} == {"lost"}
    finally:
        for process in (scheduler, worker):
            if process is not None:
                process.kill()
                process.wait()
    # The chunk's process looks for its parent's death twice a second.
    deadline = time.monotonic() + 10
    while (left := list(worker_tmp.glob("remotemap-dask-*"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], "the killed dask worker's task directory was left behind"


def test_a_large_function_is_scattered_once_and_works(dask_scheduler: str) -> None:
    table = bytes(range(256)) * (5 << 12)  # 5 MiB the function closes over: scattered

    def lookup(i: int) -> int:
        return table[i] + len(table)

    assert remote_map(lookup, [(1,), (255,), (256,)], mode=DASK, scheduler=dask_scheduler,
                      progress=False) == [1 + len(table), 255 + len(table), len(table)]
