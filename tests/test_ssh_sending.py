"""Staged inputs (:func:`remotemap.ssh.sending.send_file`) through the OpenSSH lane of a real
loopback sshd: the lane's own record says it carried them, a part already there is resumed
and its bytes are not sent again, a stop or a dropped link leaves no ssh process and a part
that the next attempt resumes, host keys are checked, and without ssh SFTP does it all.

The loopback sshd is used because the lane serves hosts reached directly; the isolated host
(reached through a ProxyCommand) keeps SFTP, which tests/test_staging_ssh.py covers."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import Staged, remote_map
from remotemap.backends.ssh_warm import POOL
from remotemap.ssh import Connection, HostKeyError, transfer
from remotemap.ssh.sending import fetch_file, part_name, remote_state, send_file
from tests.infra.sshd import SSHServer, generate_key, known_hosts_line
from tests.ssh_connection_support import connect, ssh
from tests.test_ssh_transfer import no_ssh_path  # noqa: F401  (a fixture, used by its name)

# The host has remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MIB = 1 << 20
LANE_RECORD = "sent by ssh from byte"


class Stop(Exception):
    """What a progress callback raises to stop a transfer (as staging's StagingStopped)."""


@pytest.fixture
def conn(sshd_host: SSHServer) -> Iterator[Connection]:
    with connect(sshd_host) as conn:
        conn.makedirs_private("staged")
        yield conn
        conn.remove_tree("staged")


def _digest(path: Any) -> str:
    """The file's sha256 (also run on the host, by a task)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def _local(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "input.bin"
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))
    return path


def _fetched_digest(conn: Connection, remote: str, tmp_path: Path) -> str:
    back = tmp_path / "back.bin"
    fetch_file(conn, remote, str(back))
    return _digest(back)


def _part(conn: Connection, local: Path, remote: str) -> str:
    info = local.stat()
    return part_name(conn.normalize(remote), info.st_size, info.st_mtime_ns)


def _ssh_children(conn: Connection) -> list[int]:
    """The pids of this process's ssh children (alive or not yet reaped), but for the lane's
    master (which lives with the connection)."""
    lane = conn.fast_lane
    master = lane._master.pid if lane is not None and lane._master is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except (OSError, IndexError):
            continue  # not a process, or one that ended meanwhile
        if int(fields[1]) == os.getpid() and name == "ssh" and int(entry.name) != master:
            found.append(int(entry.name))
    return found


def _settled_size(conn: Connection, path: str) -> int:
    """The size of a remote part once no writer of a stopped transfer adds to it."""
    size = -1
    for _ in range(50):
        now = int(conn.sftp().stat(path).st_size or 0)
        if now == size:
            return size
        size = now
        time.sleep(0.1)
    raise AssertionError(f"{path} still grows")


@ssh
def test_a_staged_file_goes_through_the_openssh_lane_whole(
        conn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = _local(tmp_path, 3 * MIB + 12345)
    with caplog.at_level(logging.DEBUG, logger="remotemap.ssh"):
        sent = send_file(conn, str(local), "staged/input.bin")
    assert sent == local.stat().st_size
    assert f"{LANE_RECORD} 0 on" in caplog.text  # the lane's own record: it carried the file
    assert conn.fast_lane is not None and conn.fast_lane.started
    assert remote_state(conn, "staged/input.bin") == (sent, int(local.stat().st_mtime))
    assert conn.listdir("staged") == ["input.bin"]  # the part was renamed, nothing else left
    assert _fetched_digest(conn, "staged/input.bin", tmp_path) == _digest(local)


@ssh
def test_the_lane_resumes_a_part_and_sends_only_what_it_lacks(
        conn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = _local(tmp_path, 4 * MIB)
    data = local.read_bytes()
    # A part as a dropped transfer leaves it, but its prefix differs from the file: only a
    # resume that does not send those bytes again keeps it.
    planted = bytes(b ^ 0xFF for b in data[: MIB + 7])
    conn.put_bytes(_part(conn, local, "staged/input.bin"), planted)
    with caplog.at_level(logging.DEBUG, logger="remotemap.ssh"):
        sent = send_file(conn, str(local), "staged/input.bin")
    assert sent == len(data) - len(planted)
    assert f"{LANE_RECORD} {len(planted)} on" in caplog.text
    back = tmp_path / "back.bin"
    fetch_file(conn, "staged/input.bin", str(back))
    assert back.read_bytes() == planted + data[len(planted):]


def _stop_at(threshold: int, conn: Connection, fault: str) -> Callable[[int], None]:
    """A progress callback that, past ``threshold`` bytes, stops the transfer (``stop``), or
    kills the lane's master, so the link drops under it, and then stops the call before
    SFTP takes over (``link dropped``)."""
    killed = [False]

    def progress(sent: int) -> None:
        if killed[0]:
            raise Stop("after the link dropped")
        if sent > threshold:
            if fault == "stop":
                raise Stop("stopped")
            assert conn.fast_lane is not None and conn.fast_lane._master is not None
            conn.fast_lane._master.kill()
            killed[0] = True

    return progress


@ssh
@pytest.mark.parametrize("fault", ["stop", "link dropped"])
def test_an_interrupted_lane_upload_leaves_no_ssh_and_is_resumed(
        conn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    local = _local(tmp_path, 128 * MIB)
    POOL.close_all()  # the warm hosts of earlier calls keep their own lanes' ssh masters
    with pytest.raises(Stop):
        send_file(conn, str(local), "staged/input.bin",
                  progress=_stop_at(4 * MIB, conn, fault))
    assert _ssh_children(conn) == []  # the command's ssh ended with the call
    part = _part(conn, local, "staged/input.bin")
    held = _settled_size(conn, part)
    assert 0 < held < local.stat().st_size  # what arrived is kept, nothing renamed
    assert conn.listdir("staged") == [os.path.basename(part)]
    with caplog.at_level(logging.DEBUG, logger="remotemap.ssh"):
        sent = send_file(conn, str(local), "staged/input.bin")
    assert sent == local.stat().st_size - held  # the bytes that were there went no more
    assert f"{LANE_RECORD} {held} on" in caplog.text  # resumed by the lane itself
    assert _fetched_digest(conn, "staged/input.bin", tmp_path) == _digest(local)


@ssh
def test_the_lane_refuses_a_host_key_known_hosts_does_not_hold(
        sshd_host: SSHServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    shutil.copy(sshd_host.known_hosts, known_hosts)
    local = _local(tmp_path, 2 * MIB)
    with connect(sshd_host, known_hosts=known_hosts) as conn:
        conn.makedirs_private("staged-keys")  # paramiko checked the key; now the file
        other = generate_key(tmp_path / "other_host_key", "other")  # no longer agrees
        known_hosts.write_text(known_hosts_line(sshd_host.known_hosts_name,
                                                other.with_suffix(".pub")))
        try:
            with pytest.raises(HostKeyError, match=r"host key of \[127\.0\.0\.1\]:\d+"):
                send_file(conn, str(local), "staged-keys/input.bin")
            assert conn.listdir("staged-keys") == []  # not a byte sent, not even a part
        finally:
            conn.remove_tree("staged-keys")


@ssh
@pytest.mark.usefixtures("no_ssh_path")
def test_without_ssh_the_file_goes_by_sftp_and_resumes_there(
        conn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = _local(tmp_path, 2 * MIB + 5)
    data = local.read_bytes()
    planted = data[:MIB]
    conn.put_bytes(_part(conn, local, "staged/input.bin"), planted)
    with caplog.at_level(logging.DEBUG, logger="remotemap.ssh"):
        sent = send_file(conn, str(local), "staged/input.bin")
    assert sent == len(data) - len(planted)
    assert conn.fast_lane is not None and conn.fast_lane.disabled == "no ssh program on PATH"
    assert LANE_RECORD not in caplog.text
    assert _fetched_digest(conn, "staged/input.bin", tmp_path) == _digest(local)


@ssh
def test_remote_map_stages_a_large_input_through_the_lane(
        sshd_host: SSHServer, remote_python: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    local = _local(tmp_path, 2 * MIB + 1)
    options: dict[str, Any] = {"hosts": [sshd_host.alias], "ssh_config": str(sshd_host.ssh_config),
               "python": str(remote_python), "progress": False}
    with caplog.at_level(logging.DEBUG, logger="remotemap.ssh"):
        got = remote_map(_digest, [(Staged(str(local)),)], mode="ssh", **options)
    assert got == [_digest(local)]
    assert f"{LANE_RECORD} 0 on" in caplog.text
    assert local.stat().st_size >= transfer.FAST_LANE_MIN_BYTES
