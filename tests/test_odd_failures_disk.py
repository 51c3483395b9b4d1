"""An odd failure of the run's own files stays the failure of the tasks it stops: a full disk
or a run directory removed mid-run fail the tasks whose files are lost, naming the path, and
the others keep their results (on cluster the run ends with an error naming the directory and
keeps what came back); every mode that keeps run files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException
from remotemap.backends.cluster.files import ClusterError
from remotemap.runs import RunStore
from tests import taskfuncs as tf
from tests.backends import Runner

# The run files go to a filesystem made here (full, removed mid-run): the ssh host must see it.
pytestmark = pytest.mark.ssh_loopback

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
