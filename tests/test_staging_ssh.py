"""Staging inputs on a real SSH host: sent once per host, found by the tasks, skipped when
unchanged, resumed after a dropped link, removed after success, failure and Ctrl-C.

The host comes from one fixture, :func:`host`: the isolated host (``isolated_ssh_host``),
whose files are not the caller's (the caller's paths do not exist there), so a task that reads
an input proves it reads the staged copy. Every check of the host's side is made by tasks on
the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import RemoteException, Staged, remote_map, staged_path
from remotemap.backends.staging import HostStaging, StagingPlan
from remotemap.backends.staging_targets import SSHTarget
from remotemap.ssh import Connection, SSHError, connection_options
from remotemap.ssh.sending import fetch_file
from remotemap.staged import STAGED_ROOT_ENV, mirrored
from tests.isolated_fixtures import IsolatedSSHHost
from tests.test_interrupt import _signal_when_running, caller_script
from tests.test_treatment import SCRIPT, subjects_in

pytestmark = pytest.mark.ssh

# The host has remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def host(isolated_ssh_host: IsolatedSSHHost) -> Iterator[dict[str, Any]]:
    """The options that reach the isolated test host (none of the caller's files are there),
    with a staging folder of this test's own (removed at the end, when the test left it
    empty)."""
    options: dict[str, Any] = {
        **isolated_ssh_host.options(), "progress": False,
        "stage_dir": f".cache/rm-staging-{uuid.uuid4().hex[:8]}"}
    yield options
    remote_map(_remove_if_empty, [(options["stage_dir"],)], mode="ssh", **options)


def _remove_if_empty(stage_dir: str) -> None:
    # Hygiene only: the tests that promise removal check it themselves (areas_left).
    with contextlib.suppress(OSError):
        os.rmdir(os.path.expanduser(f"~/{stage_dir}"))


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Inputs in the caller's (private) directory, which is also its working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for i in range(4):
        (tmp_path / "data" / f"sub-{i}.txt").write_text(f"subject {i}")
    (tmp_path / "atlas.txt").write_text("atlas")
    return tmp_path


def _read(path: Any, caller_path: str) -> tuple[str, str, bool]:
    """On the host: where the input is, what it holds, whether the caller's copy is readable."""
    return os.fspath(path), Path(path).read_text(), os.access(caller_path, os.R_OK)


def _identity(path: str) -> tuple[int, int, str]:
    """The staged copy's inode and change time (a new copy has new ones), and its content."""
    info = os.stat(path)
    return info.st_ino, info.st_ctime_ns, Path(path).read_text()


def _listing(stage_dir: str) -> list[str] | None:
    folder = os.path.expanduser(f"~/{stage_dir}")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else None


def _fail_or_read(path: str, fail: bool) -> str:
    if fail:
        raise ValueError("this task fails")
    return Path(path).read_text()


def _remove_kept_area() -> None:
    shutil.rmtree(os.environ[STAGED_ROOT_ENV])


def areas_left(host: dict[str, Any]) -> list[str] | None:
    """The staging areas left in the test's staging folder, as a task on the host sees it."""
    result: list[str] | None = remote_map(_listing, [(host["stage_dir"],)], mode="ssh", **host)[0]
    return result


def test_task_inputs_reach_the_host_and_are_read_there(host: dict[str, Any], data: Path) -> None:
    args = [(Staged(f"data/sub-{i}.txt"), str(data / f"data/sub-{i}.txt")) for i in range(4)]
    got = remote_map(_read, args, mode="ssh", chunksize=1, **host)
    for i, (path, text, caller_copy_readable) in enumerate(got):
        caller = str(data / f"data/sub-{i}.txt")
        assert text == f"subject {i}"
        assert path != caller and path.endswith(caller)  # a copy, mirroring the caller's path
        assert not caller_copy_readable  # so the task read the copy, not the caller's file
    assert areas_left(host) == []  # removed after the run


def test_run_wide_files_and_directories_are_found_by_relative_name(
        host: dict[str, Any], data: Path) -> None:
    def read_sent(name: str) -> tuple[str, str]:
        path = staged_path(name)
        return path, Path(path).read_text()

    got = remote_map(read_sent, [("atlas.txt",), ("data/sub-3.txt",), ("./data/../atlas.txt",)],
                     mode="ssh", send=["atlas.txt", "data"], **host)
    assert [text for _, text in got] == ["atlas", "subject 3", "atlas"]
    assert all(path != str(data / "atlas.txt") for path, _ in got[::2])


def test_a_file_goes_once_per_host_however_many_tasks_need_it(
        host: dict[str, Any], data: Path) -> None:
    got = remote_map(_identity, [(Staged("atlas.txt"),)] * 8, mode="ssh", chunksize=1,
                     n_jobs=2, **host)
    assert len(set(got)) == 1  # one copy: every send makes a new file (inode, ctime)


def test_an_unchanged_kept_file_is_not_sent_again(host: dict[str, Any], data: Path) -> None:
    kept = {**host, "keep_staged": True}
    try:
        first = remote_map(_identity, [(Staged("atlas.txt"),)], mode="ssh", **kept)[0]
        again = remote_map(_identity, [(Staged("atlas.txt"),)], mode="ssh", **kept)[0]
        assert again == first  # the same copy: not sent again
        (data / "atlas.txt").write_text("atlas, version 2")
        os.utime(data / "atlas.txt", (1_000_000_000, 1_000_000_000))
        changed = remote_map(_identity, [(Staged("atlas.txt"),)], mode="ssh", **kept)[0]
        assert changed[2] == "atlas, version 2" and changed[:2] != first[:2]
    finally:
        remote_map(_remove_kept_area, [()], mode="ssh", **kept)


def test_a_file_that_cannot_be_sent_fails_only_its_tasks(host: dict[str, Any],
                                                         data: Path) -> None:
    args = [(Staged("data/sub-0.txt"), "x"), (Staged("data/missing.txt"), "x"),
            (Staged("data/sub-2.txt"), "x")]
    with pytest.raises(RemoteException) as info:
        remote_map(_read, args, mode="ssh", **host)
    assert info.value.failed_indices == [1]
    failure = info.value.failures[0]
    assert str(data / "data" / "missing.txt") in failure.message
    assert failure.exception_type == "CannotSend"
    assert info.value.results[2][1] == "subject 2"


def test_a_run_wide_file_that_cannot_be_sent_fails_every_task(host: dict[str, Any],
                                                             data: Path) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(_listing, [("a",), ("b",)], mode="ssh", send=["atlas.txt", "nope.txt"],
                   **host)
    assert info.value.failed_indices == [0, 1]
    assert all(str(data / "nope.txt") in f.message for f in info.value.failures)
    assert areas_left(host) == []


@pytest.mark.parametrize("fail", [False, True])
def test_staged_files_are_removed_after_success_and_failure(
        host: dict[str, Any], data: Path, fail: bool) -> None:
    args = [(Staged("data/sub-0.txt"), fail), (Staged("data/sub-1.txt"), False)]
    if fail:
        with pytest.raises(RemoteException):
            remote_map(_fail_or_read, args, mode="ssh", send=["atlas.txt"], **host)
    else:
        remote_map(_fail_or_read, args, mode="ssh", send=["atlas.txt"], **host)
    assert areas_left(host) == []


CTRL_C_SCRIPT = caller_script(
    """
    marker_dir = sys.argv[1]
    from remotemap import Staged
    """,
    """
    remote_map(task, [(marker_dir, Staged("atlas.txt")) for i in range(4)], mode="ssh",
               n_jobs=2, progress=False, send=["data"])
    """)


def test_staged_files_are_removed_after_ctrl_c(host: dict[str, Any], data: Path,
                                               shared_dir: Path) -> None:
    config = data / "config.toml"
    config.write_text(f'[ssh]\nhosts = ["{host["hosts"][0]}"]\nssh_config = '
                      f'"{host["ssh_config"]}"\npython = "{host["python"]}"\n'
                      f'stage_dir = "{host["stage_dir"]}"\n')
    script = data / "interrupted.py"
    script.write_text(CTRL_C_SCRIPT)
    stopped = _signal_when_running([sys.executable, str(script), str(shared_dir)], shared_dir,
                                   signal.SIGINT,
                                   env={**os.environ, "REMOTEMAP_CONFIG": str(config)})
    assert stopped.returncode == 130, stopped.err
    assert stopped.seconds < 5, f"took {stopped.seconds:.1f} s to stop"
    assert areas_left(host) == []  # the area was made (the tasks ran), and is gone


def test_a_dropped_link_resumes_the_file_where_it_stopped(host: dict[str, Any],
                                                         data: Path) -> None:
    big = data / "big.bin"
    big.write_bytes(os.urandom(48 << 20))
    plan = StagingPlan((), False, host["stage_dir"], "run-resume", str(data))
    staging = HostStaging(host["hosts"][0], plan)
    options = connection_options(host)
    handed = [0]  # bytes handed to the link so far

    class Counting(SSHTarget):
        def send(self, local: str, path: str, progress: Callable[[int], None]) -> int:
            def both(n: int) -> None:
                handed[0] = n
                progress(n)
            return super().send(local, path, both)

    first = Connection(host["hosts"][0], **options).connect()
    dropped = threading.Event()

    def cut_at_16_mib() -> bool:  # asked after each block: a real fault, the link closes
        if handed[0] > 16 << 20 and not dropped.is_set():
            dropped.set()
            threading.Thread(target=first.transport.close).start()
        return False

    staging.open(Counting(first), 0, cut_at_16_mib)
    with pytest.raises((SSHError, OSError, EOFError)):
        staging.place(Counting(first), Staged(str(big)), cut_at_16_mib)
    assert dropped.is_set() and staging.bytes_sent == 0
    first.close()

    second = Connection(host["hosts"][0], **options).connect()
    try:
        path = staging.place(SSHTarget(second), Staged(str(big)), lambda: False)
        resumed = staging.bytes_sent
        # Only what had not arrived went again: most of the 16 MiB were there already.
        assert 0 < resumed < big.stat().st_size - (8 << 20), resumed
        back = data / "back.bin"  # and the one call that fetches a file brings it back whole
        assert fetch_file(second, path, str(back)) == big.stat().st_size
        assert hashlib.sha256(back.read_bytes()).digest() == \
            hashlib.sha256(big.read_bytes()).digest()
        staging.place(SSHTarget(second), Staged(str(big)), lambda: False)
        assert staging.bytes_sent == resumed  # already there: nothing sent
    finally:
        staging.release(0, SSHTarget(second))
        second.close()
    assert areas_left(host) == []


def test_mirrored_paths_keep_the_callers_absolute_path() -> None:
    assert mirrored("/h/area/", "/home/me/x.txt") == "/h/area/home/me/x.txt"


def test_dispatch_script_over_ssh_with_relative_paths(
        host: dict[str, Any], data: Path) -> None:
    """The new user's first try: relative paths, a host that cannot read the caller's files;
    each subject is staged to the host, its result comes back here, the copies go."""
    subjects_in(data / "data")
    options = [f"{key}={json.dumps(host[key])}"
               for key in ("hosts", "ssh_config", "python", "remote_dir", "stage_dir")]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "data", "--mode", "ssh", "--parts", "2",
         "--output", "out", "--verify", *(a for o in options for a in ("--option", o))],
        capture_output=True, text=True, timeout=600, check=False, cwd=data,
        env={**os.environ, "XDG_STATE_HOME": str(data / "state")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("(verified)") == 2, done.stdout
    assert sorted(os.listdir(data / "out")) == ["sub-example4d_tstats.nii",
                                                "sub-functional_tstats.nii"]
    assert areas_left(host) == []


def _cut_the_link_once(path: str, marker: str) -> str:
    """On the host: the first time, kill this login's sshd process (the link drops)."""
    marker = os.path.expanduser(marker)
    if not os.path.exists(marker):
        open(marker, "w").close()
        pid = os.getppid()
        while pid > 1:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as f:
                if f.read().startswith("sshd"):
                    os.kill(pid, signal.SIGKILL)
                    break
            pid = int(fields[1])
    return Path(path).read_text()


def _remove(path: str) -> None:
    os.remove(os.path.expanduser(path))


def test_a_task_whose_input_was_not_sent_is_reported_after_its_chunk_moved(
        host: dict[str, Any], data: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A chunk staged without one of its tasks (a missing input) loses its host: the task's
    failure still comes back with the chunk's result from the next connection."""
    marker = f"~/{host['stage_dir']}-cut"
    args = [(Staged("data/missing.txt"), marker), (Staged("data/sub-1.txt"), marker)]
    # The dropped link is noticed by the keepalive (default 30 s): every 2 s here, read from
    # the ssh config as a user would set it (OpenSSH's first value wins: before the Host).
    config = tmp_path / "ssh_config"
    config.write_text("ServerAliveInterval 2\n" + Path(host["ssh_config"]).read_text())
    try:
        with caplog.at_level(logging.WARNING, logger="remotemap"), \
                pytest.raises(RemoteException) as info:
            remote_map(_cut_the_link_once, args, mode="ssh", chunksize=2,
                       **{**host, "ssh_config": str(config)})
    finally:
        remote_map(_remove, [(marker,)], mode="ssh", **host)
    assert "unfinished chunk(s) go back to the queue" in caplog.text  # the link did drop
    assert info.value.failed_indices == [0]
    assert str(data / "data" / "missing.txt") in info.value.failures[0].message
    assert info.value.results[1] == "subject 1"  # run again after the link dropped
    assert areas_left(host) == []
