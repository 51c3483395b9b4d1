"""The worker server and the on-disk protocol, driven directly and through local_with_dumps."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remotemap import RemoteException, remote_map
from remotemap.backends.base import TaskOptions
from remotemap.backends.dumps import DumpsSession
from remotemap.execution import dumps, dumps_result
from remotemap.protocol import (
    FUNCTION,
    RunLayout,
    chunk_name,
    create_local_run_dir,
    decode_outcome,
    encode_chunk,
    open_outcome,
    outcome_name,
    seal_file,
)
from remotemap.tasks import Chunk, ChunkResult
from tests import taskfuncs as tf

#: The run key the tests' hand-made run directories are sealed with.
KEY = bytes(range(32))


def _layout_with(parent: Path, function: object, chunks: list[Chunk], token: str = "tok"
                 ) -> RunLayout:
    """A run directory made by hand, as a caller would, in ``parent``: the test's tmp_path,
    since no caller is there to remove it."""
    layout, rundir = create_local_run_dir(str(parent))
    rundir.write(FUNCTION, seal_file(KEY, FUNCTION, dumps(function)))
    for chunk in chunks:
        name = chunk_name(chunk.id)
        rundir.write(name, seal_file(KEY, name, encode_chunk(token, chunk)))
    rundir.close()
    return layout


def _serve(layout: RunLayout) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "remotemap.worker", "serve", layout.root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(f"key {KEY.hex()}\n".encode())
    proc.stdin.flush()
    return proc


def test_run_directory_is_private_and_removed(tmp_path: Path) -> None:
    seen: list[str] = []
    assert remote_map(tf.square, [(2,)], mode="local_with_dumps", temp_dir=str(tmp_path)) == [4]
    seen = os.listdir(tmp_path)
    assert seen == []


def test_keep_files_keeps_every_protocol_file(tmp_path: Path) -> None:
    assert remote_map(tf.noisy, [(0,), (1,)], mode="local_with_dumps", temp_dir=str(tmp_path),
                      keep_files=True, progress=False) == [0, 1]
    (run,) = tmp_path.iterdir()
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    layout = RunLayout(str(run))
    for path in (layout.function, layout.chunk(0), layout.outcome(1), layout.log(0)):
        assert os.path.exists(path), path
    assert "stdout noise 1" in Path(layout.log(1)).read_text()
    assert stat.S_IMODE(os.stat(layout.outcome(0)).st_mode) == 0o600


def test_outcome_of_another_run_is_never_taken() -> None:
    data = dumps_result(ChunkResult(0, [0], ["old"]), token="earlier-run")
    assert decode_outcome(data, "earlier-run") is not None
    assert decode_outcome(data, "this-run") is None


def test_stale_outcome_file_is_ignored_by_collect() -> None:
    session = DumpsSession(dumps(tf.square), TaskOptions(), n_jobs=1)
    try:
        chunk = Chunk(0, [0], [(1,)], [{}])
        name = outcome_name(0)
        session.rundir.write(name, seal_file(session.key, name,
                                             dumps_result(ChunkResult(0, [0], ["stale"]),
                                                          "other")))
        result = session.collect(0, chunk, "exit:0")
    finally:
        session.close()
    assert result.values == [] and result.failures[0].kind == "lost"
    assert "without writing its outcome" in result.failures[0].message


def test_server_answers_ready_then_done_and_stops_on_eof(tmp_path: Path) -> None:
    layout = _layout_with(tmp_path, tf.square, [Chunk(0, [0], [(7,)], [{}])])
    proc = _serve(layout)
    assert proc.stdin is not None and proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[0] == b"ready" and int(ready[1]) == proc.pid
    proc.stdin.write(b"bogus\nrun 0\n")
    proc.stdin.flush()
    assert proc.stdout.readline().startswith(b"error unknown command")
    assert proc.stdout.readline() == b"done 0 exit:0\n"
    result = open_outcome(KEY, 0, Path(layout.outcome(0)).read_bytes(), "tok",
                          layout.outcome(0))
    assert result is not None and result.values == [49]
    proc.stdin.close()
    assert proc.wait(timeout=5) == 0


def test_server_timeout_kills_the_task_and_says_so(tmp_path: Path) -> None:
    stem = str(tmp_path / "pid")
    layout = _layout_with(tmp_path, tf.pid_and_sleep, [Chunk(0, [0], [(stem, 0, 30)], [{}])])
    proc = _serve(layout)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.readline()
    started = time.monotonic()
    proc.stdin.write(b"run 0 0.3\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"done 0 timeout\n"
    assert time.monotonic() - started < 10
    proc.stdin.close()
    proc.wait(timeout=5)


def test_closing_stdin_kills_running_children(tmp_path: Path) -> None:
    stem = str(tmp_path / "pid")
    layout = _layout_with(tmp_path, tf.pid_and_sleep, [Chunk(0, [0], [(stem, 0, 60)], [{}])])
    proc = _serve(layout)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.readline()
    proc.stdin.write(b"run 0\n")
    proc.stdin.flush()
    while not os.path.exists(f"{stem}.0"):
        time.sleep(0.01)
    child = int(Path(f"{stem}.0").read_text())
    proc.stdin.close()
    assert proc.wait(timeout=5) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_function_that_cannot_load_on_the_worker_names_the_module(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    (tmp_path / "vanishing_mod_rm.py").write_text("def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_mod_rm  # type: ignore[import-not-found]

    (tmp_path / "vanishing_mod_rm.py").unlink()
    try:
        with pytest.raises(RemoteException) as info:
            remote_map(vanishing_mod_rm.f, [(1,), (2,)], mode="local_with_dumps")
    finally:
        sys.modules.pop("vanishing_mod_rm", None)
    assert info.value.failed_indices == [0, 1]
    assert "No module named 'vanishing_mod_rm'" in info.value.failures[0].message


def _kill_server(x: int) -> int:
    if x == 2:
        os.kill(os.getppid(), 9)  # the parent of a task's process is the worker server
        time.sleep(5)
    return x


def test_server_killed_mid_run_loses_only_what_it_was_running() -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(_kill_server, [(i,) for i in range(6)], mode="local_with_dumps", n_jobs=1)
    exc = info.value
    assert exc.failed_indices == [2]
    assert exc.failures[0].kind == "lost"
    assert exc.results == [0, 1, None, 3, 4, 5]


def _serve_orphanable(layout: RunLayout) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "remotemap.worker", "serve", layout.root,
                             "--remove-orphaned"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"key {KEY.hex()}\n".encode())
    proc.stdin.flush()
    assert proc.stdout.readline().startswith(b"ready ")
    return proc


def test_a_server_whose_caller_vanished_removes_the_run_directory(tmp_path: Path) -> None:
    """``--remove-orphaned``: stdin closing without the caller's ``close`` (a caller killed
    by SIGKILL) removes the run directory; after ``close`` the caller removes it itself."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    gone = _layout_with(tmp_path / "a", tf.square, [])
    proc = _serve_orphanable(gone)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0 and not os.path.exists(gone.root)
    kept = _layout_with(tmp_path / "b", tf.square, [])
    proc = _serve_orphanable(kept)
    assert proc.stdin is not None
    proc.stdin.write(b"close\n")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0 and os.path.isdir(kept.root)


def test_a_killed_callers_local_with_dumps_directory_is_removed(tmp_path: Path) -> None:
    from tests.test_interrupt import SCRIPT

    markers, runs = tmp_path / "markers", tmp_path / "runs"
    markers.mkdir()
    runs.mkdir()
    caller = subprocess.Popen([sys.executable, "-c", SCRIPT, str(markers), str(runs),
                               "local_with_dumps"], cwd=str(Path(__file__).parents[1]))
    try:
        deadline = time.monotonic() + 60
        while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(runs.iterdir())) == 1  # the run directory, tasks running
    finally:
        caller.kill()
        caller.wait()
    deadline = time.monotonic() + 30
    while list(runs.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(runs.iterdir()) == []  # its server stopped the tasks and removed it
    for pid_file in markers.iterdir():  # and no task lives on
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.stem), 0)
            raise AssertionError(f"task process {pid_file.stem} still runs")
