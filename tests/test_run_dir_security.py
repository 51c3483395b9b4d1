"""Nothing is unpickled from a place another user controls: the transient run directories of
local_with_dumps, ssh and cluster (issue 10, section 3).

Each attack plants a pickle whose loading touches a marker file (what an attacker's pickle
would do with a shell command): the marker must never appear, and no planted result may reach
the caller. A run directory swapped mid-run, and where the run key never goes:
test_run_dir_midrun.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import remote_map
from remotemap.backends.base import TaskOptions
from remotemap.backends.dumps import DumpsSession
from remotemap.errors import TamperedFile, UnsafePath
from remotemap.execution import dumps, dumps_result
from remotemap.integrity import write_key_file
from remotemap.protocol import (
    FUNCTION,
    chunk_name,
    create_local_run_dir,
    encode_chunk,
    open_outcome,
    outcome_name,
    seal_file,
)
from remotemap.tasks import Chunk, ChunkResult
from tests import taskfuncs as tf

# The ssh host has remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NOBODY = 65534
KEY = bytes(range(32))


class Planted:
    """What an attacker plants: a pickle that runs a command (here: touches ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def planted(marker: Path) -> bytes:
    return pickle.dumps(Planted(marker))


def _unsafe_dir(parent: Path, kind: str) -> Path:
    """A directory others could use to swap what is made in it: writable by everyone without
    the sticky bit, or owned by another user (nobody)."""
    path = Path(tempfile.mkdtemp(dir=parent))
    if kind == "world-writable":
        path.chmod(0o777)
    else:
        path.chmod(0o755)
        os.chown(path, NOBODY, NOBODY)
    return path


@pytest.fixture(params=["world-writable", "other-owner"])
def unsafe_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "other-owner" and os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    return str(request.param)


def _assert_names(exc: UnsafePath, path: Path, kind: str) -> None:
    assert str(path) in str(exc)
    if kind == "other-owner":
        assert f"owned by uid {NOBODY}" in str(exc)
    else:
        assert "can be written by others" in str(exc)


# -- refusing unsafe parents ---------------------------------------------------------------------
def test_temp_dir_under_an_unsafe_parent_is_refused(tmp_path: Path, unsafe_kind: str) -> None:
    parent = _unsafe_dir(tmp_path, unsafe_kind)
    with pytest.raises(UnsafePath) as info:
        remote_map(tf.square, [(2,)], mode="local_with_dumps", temp_dir=str(parent / "runs"))
    _assert_names(info.value, parent, unsafe_kind)
    assert list(parent.iterdir()) == []  # nothing was made there


@pytest.mark.ssh
def test_remote_dir_under_an_unsafe_parent_is_refused(sshd_host: Any, remote_python: Path,
                                                      unsafe_kind: str) -> None:
    parent = _unsafe_dir(Path("/tmp"), unsafe_kind)  # the ssh user can reach /tmp
    try:
        with pytest.raises(UnsafePath) as info:
            remote_map(tf.square, [(2,)], mode="ssh", hosts=[sshd_host.alias],
                       ssh_config=str(sshd_host.ssh_config), python=str(remote_python),
                       remote_dir=str(parent / "runs"), progress=False)
        _assert_names(info.value, parent, unsafe_kind)
        assert "rmtest@127.0.0.1" in str(info.value)  # the host, as the connection names it
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(parent)


def test_cluster_shared_dir_under_an_unsafe_parent_is_refused(tmp_path: Path,
                                                              unsafe_kind: str) -> None:
    from remotemap.backends.cluster.session import create_run
    from remotemap.backends.cluster.settings import cluster_settings

    parent = _unsafe_dir(tmp_path, unsafe_kind)
    settings = cluster_settings({"scheduler": "local", "shared_dir": str(parent / "runs")})
    with pytest.raises(UnsafePath) as info:
        create_run(settings, dumps(tf.square), function="square", env={}, n_tasks=1,
                   detached=False)
    _assert_names(info.value, parent, unsafe_kind)
    assert list(parent.iterdir()) == []


# -- planted files: never unpickled --------------------------------------------------------------
def _run_dir(function: bytes, chunks: dict[int, bytes]) -> str:
    layout, rundir = create_local_run_dir()
    rundir.write(FUNCTION, function)
    for number, data in chunks.items():
        rundir.write(chunk_name(number), data)
    rundir.close()
    return layout.root


def _sealed_chunk(number: int, *args: Any) -> bytes:
    return seal_file(KEY, chunk_name(number), encode_chunk("tok", Chunk(number, [0], [args],
                                                                         [{}])))


def _serve_one(root: str, number: int) -> bytes:
    """Start a worker server on ``root`` with KEY, run chunk ``number``: its done line."""
    proc = subprocess.Popen([sys.executable, "-m", "remotemap.worker", "serve", root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"key {KEY.hex()}\nrun {number}\n".encode())
    proc.stdin.flush()
    try:
        assert proc.stdout.readline().startswith(b"ready")
        return proc.stdout.readline()
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_planted_function_is_refused_by_the_worker_server(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = _run_dir(planted(marker), {0: _sealed_chunk(0, 3)})
    try:
        assert _serve_one(root, 0) == b"done 0 exit:0\n"
        path = os.path.join(root, outcome_name(0))
        result = open_outcome(KEY, 0, Path(path).read_bytes(), "tok", path)
    finally:
        shutil.rmtree(root)
    assert not marker.exists()
    assert result is not None and result.values == []
    assert "function.pkl failed its integrity check" in result.failures[0].message


def test_planted_chunk_is_refused_by_the_worker_server(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = _run_dir(seal_file(KEY, FUNCTION, dumps(tf.square)), {0: planted(marker)})
    try:
        done = _serve_one(root, 0)
        log = Path(root, "logs", "000000.log").read_text()
        assert not os.path.exists(os.path.join(root, outcome_name(0)))
    finally:
        shutil.rmtree(root)
    assert not marker.exists()
    assert done != b"done 0 exit:0\n"  # the chunk fails; the caller reports its tasks
    assert "000000.pkl failed its integrity check" in log


@pytest.mark.ssh
def test_planted_function_is_refused_on_the_ssh_host(sshd_host: Any, remote_python: Path
                                                     ) -> None:
    """The worker server on the host checks what it loads too (the host's side of a run)."""
    from remotemap.ssh import Connection

    marks = Path(tempfile.mkdtemp(dir="/tmp"))
    marks.chmod(0o777)  # the ssh user's planted pickle could leave its mark here
    marker = marks / "pwned"
    root = ".cache/remotemap/planted-test/run-x"
    try:
        with Connection(sshd_host.alias, ssh_config=str(sshd_host.ssh_config)).connect() as conn:
            for sub in ("", "chunks", "outcomes", "logs"):
                conn.makedirs_private(f"{root}/{sub}".rstrip("/"))
            conn.put_bytes(f"{root}/{FUNCTION}", planted(marker))
            conn.put_bytes(f"{root}/{chunk_name(0)}", _sealed_chunk(0, 3))
            with conn.open_process([str(remote_python), "-m", "remotemap.worker", "serve",
                                    root]) as proc:
                proc.write(f"key {KEY.hex()}\nrun 0\n".encode())
                lines = [proc.readline(timeout=30) for _ in range(2)]
                proc.close_stdin()
            data = conn.get_bytes(f"{root}/{outcome_name(0)}")
            conn.remove_tree(".cache/remotemap/planted-test")
        assert lines[0].startswith(b"ready") and lines[1] == b"done 0 exit:0\n"
        assert not marker.exists()
        result = open_outcome(KEY, 0, data, "tok", "outcome")
        assert result is not None and result.values == []
        assert "function.pkl failed its integrity check" in result.failures[0].message
    finally:
        shutil.rmtree(marks)


def test_batch_worker_refuses_a_planted_function_and_a_key_others_can_read(
        tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = _run_dir(planted(marker), {0: _sealed_chunk(0, 3)})
    keys = tmp_path / "keys"
    write_key_file(str(keys / "run.key"), KEY)
    worker = [sys.executable, "-m", "remotemap.worker", "run", root, "--key-file"]
    try:
        done = subprocess.run([*worker, str(keys / "run.key"), "0"], capture_output=True)
        path = os.path.join(root, outcome_name(0))
        result = open_outcome(KEY, 0, Path(path).read_bytes(), "tok", path)
        (keys / "run.key").chmod(0o644)
        refused = subprocess.run([*worker, str(keys / "run.key"), "0"], capture_output=True,
                                 text=True)
    finally:
        shutil.rmtree(root)
    assert done.returncode == 0 and not marker.exists()
    assert result is not None and "integrity check" in result.failures[0].message
    assert refused.returncode != 0
    assert f"{keys / 'run.key'} can be read by others" in refused.stderr


def test_outcome_is_authenticated_before_it_is_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(TamperedFile, match=r"outcomes/000000\.pkl"):
        open_outcome(KEY, 0, planted(marker), "tok", "RUN/outcomes/000000.pkl")
    assert not marker.exists()
    # Sealed for another chunk's name: refused too (no outcome stands in for another).
    other = seal_file(KEY, outcome_name(1), dumps_result(ChunkResult(1, [1], [1]), "tok"))
    with pytest.raises(TamperedFile):
        open_outcome(KEY, 0, other, "tok", "RUN/outcomes/000000.pkl")
    # Sealed by this key for another run's token: checked, then not taken.
    stale = seal_file(KEY, outcome_name(0), dumps_result(ChunkResult(0, [0], [1]), "old"))
    assert open_outcome(KEY, 0, stale, "tok", "RUN/outcomes/000000.pkl") is None


def test_planted_outcome_fails_its_task_in_local_with_dumps(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    session = DumpsSession(dumps(tf.square), TaskOptions(), n_jobs=1, temp_dir=str(tmp_path))
    try:
        Path(session.layout.outcome(0)).write_bytes(planted(marker))
        result = session.collect(0, Chunk(0, [0], [(1,)], [{}]), "exit:0")
    finally:
        session.close()
    assert not marker.exists()
    assert result.values == [] and result.failures[0].kind == "tampered"
    assert session.layout.outcome(0) in result.failures[0].message


@pytest.mark.ssh
def test_planted_outcome_fails_its_task_on_ssh(sshd_host: Any, remote_python: Path,
                                               tmp_path: Path) -> None:
    from remotemap.backends.remote_files import RemoteRun

    marker = tmp_path / "pwned"
    settings = {"ssh_config": str(sshd_host.ssh_config), "python": str(remote_python)}
    with RemoteRun(sshd_host.alias, settings, dumps(tf.square), TaskOptions()) as remote:
        assert remote.layout is not None
        remote.connection.put_bytes(remote.layout.outcome(0), planted(marker))
        result = remote.collect(Chunk(0, [0], [(1,)], [{}]), "exit:0")
    assert not marker.exists()
    assert result.values == [] and result.failures[0].kind == "tampered"
    assert f"{sshd_host.alias}:{remote.layout.outcome(0)}" in result.failures[0].message


def test_planted_outcome_fails_its_task_on_cluster(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from remotemap.backends.cluster.session import create_run
    from remotemap.backends.cluster.settings import cluster_settings

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    marker = tmp_path / "pwned"
    settings = cluster_settings({"scheduler": "local", "shared_dir": str(tmp_path / "runs")})
    run = create_run(settings, dumps(tf.square), function="square", env={}, n_tasks=1,
                     detached=False)
    try:
        key_file = Path(run.meta["key_file"])
        assert key_file.parent == tmp_path / "state" / "remotemap" / "keys"
        assert oct(key_file.stat().st_mode & 0o777) == oct(0o600)
        assert run.key.hex() not in "".join(p.read_bytes().hex() for p in
                                            Path(run.files.root).rglob("*") if p.is_file())
        # Task 0 is awaited from file 0 (no engine is started: the outcome is planted first).
        run._add_round({"round": 0, "files": [[0, 0]], "jobs": [[0]], "scheduler": "local"})
        run.files.write_many({outcome_name(0): planted(marker)})
        values, failures = run.poll()
    finally:
        run.remove()
        run.files.close()
    assert not marker.exists()
    assert values == [] and [f.kind for f in failures] == ["tampered"]
    assert "outcomes/000000.pkl failed its integrity check" in failures[0].message
    assert not key_file.exists()


@pytest.mark.ssh
def test_a_remote_parent_is_walked_once_per_connection(sshd_host: Any) -> None:
    """What the walk checked (owners and modes on the way) no other user can undo, so a
    connection remembers it; a new connection walks again and sees what changed since."""
    from remotemap.ssh import Connection
    from remotemap.ssh.safety import check_remote_parent, remote_uid

    base = Path(sshd_host.user.home) / ".cache" / "remotemap" / "parent-test"
    parent = ".cache/remotemap/parent-test/runs"
    config = str(sshd_host.ssh_config)
    try:
        with Connection(sshd_host.alias, ssh_config=config).connect() as conn:
            uid = remote_uid(conn)
            conn.makedirs_private(parent)
            first = check_remote_parent(conn, parent, uid)
            base.chmod(0o777)  # only its owner (or root, here) can do this
            assert check_remote_parent(conn, parent, uid) == first
        with Connection(sshd_host.alias, ssh_config=config).connect() as fresh, \
                pytest.raises(UnsafePath, match="parent-test"):
            check_remote_parent(fresh, parent, uid)
    finally:
        shutil.rmtree(base, ignore_errors=True)
