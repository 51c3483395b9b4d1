"""Attacks on a run under way: its run directory swapped for a copy holding the attacker's
function (detected, and nothing of theirs runs), and the run key looked for where a task or the
disk would show it (it is in neither). The attacks on files planted before they are read are in
test_run_dir_security.py.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import Executor, RemoteException
from remotemap.backends.base import TaskOptions
from remotemap.backends.dumps import DumpsSession
from remotemap.errors import UnsafePath
from remotemap.execution import dumps
from remotemap.integrity import new_key
from remotemap.protocol import FUNCTION
from remotemap.tasks import Chunk
from tests import taskfuncs as tf

# The ssh host has remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def evil(marker: str, *args: Any) -> str:
    """The attacker's function: it runs as the victim and returns a result of its choosing."""
    Path(marker).touch()
    return "evil result"


# -- a run directory swapped mid-run -------------------------------------------------------------
def swap_and_kill_server(parent: str, marker: str) -> None:
    """What an attacker who could rename the run directory does: moves it away, puts a copy
    with a function of theirs in its place; then the worker server dies (so that a new one
    starts from the directory's name)."""
    (run,) = [p for p in Path(parent).iterdir() if p.name.startswith("remotemap-")]
    away = run.with_name(run.name + ".away")
    run.rename(away)
    shutil.copytree(away, run)
    (run / FUNCTION).write_bytes(cloudpickle.dumps(functools.partial(evil, marker)))
    os.kill(os.getppid(), signal.SIGKILL)  # the parent of a task's process is the server
    time.sleep(5)


def test_swapped_run_dir_is_detected_in_local_with_dumps(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o700)
    with Executor("local_with_dumps", temp_dir=str(runs), n_jobs=1) as ex:
        with pytest.raises(RemoteException):
            ex.submit(swap_and_kill_server, str(runs), str(marker)).result(timeout=60)
        second = ex.submit(tf.square, 3)
        with pytest.raises(UnsafePath, match="replaced") as info:
            second.result(timeout=60)
    assert not marker.exists()
    assert str(runs / "remotemap-") in str(info.value)


@pytest.fixture
def cluster_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from tests.slurm_fixtures import require_soma_workflow

    require_soma_workflow()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    runs = tmp_path / "runs"
    yield runs


def test_swapped_run_dir_is_detected_on_cluster(cluster_local: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with Executor("cluster", scheduler="local", shared_dir=str(cluster_local)) as ex:
        assert ex.submit(tf.square, 2).result(timeout=120) == 4
        (run,) = cluster_local.iterdir()
        away = run.with_name(run.name + ".away")
        run.rename(away)
        shutil.copytree(away, run)
        (run / FUNCTION).write_bytes(cloudpickle.dumps(functools.partial(evil, str(marker))))
        second = ex.submit(tf.square, 3)
        with pytest.raises(UnsafePath, match="replaced"):
            second.result(timeout=120)
    assert not marker.exists()


def test_run_key_never_reaches_the_tasks_or_the_disk(tmp_path: Path) -> None:
    """The key crosses a pipe: it is in no file of the run, nor in the environment or the
    command line of the worker server or of a task."""
    session = DumpsSession(dumps(_process_texts), TaskOptions(), n_jobs=1,
                           temp_dir=str(tmp_path), keep_files=True)
    try:
        session.submit(Chunk(0, [0], [()], [{}]))
        (result,) = session.wait(timeout=60)
        key = session.key
    finally:
        session.close()
    [texts] = result.values
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 4  # function, chunk, outcome, log: kept
    for blob in [*texts, *files]:
        assert key not in blob and key.hex().encode() not in blob


def _process_texts() -> list[bytes]:
    """This task's and its worker server's environment and command line."""
    return [Path(f"/proc/{pid}/{what}").read_bytes() for pid in (os.getpid(), os.getppid())
            for what in ("environ", "cmdline")]


def test_an_older_server_echoing_the_key_line_does_not_leak_the_key() -> None:
    """A worker from before run keys answers the key line with ``error unknown command``,
    quoting it: the caller's error says what to do and does not repeat the key."""
    from remotemap.server_client import WorkerServerGone, parse_done

    key = new_key().hex()
    with pytest.raises(WorkerServerGone) as info:
        parse_done(f"error unknown command 'key {key}'\n".encode(), "old-host")
    assert key not in str(info.value)
    assert "same remotemap version" in str(info.value)
