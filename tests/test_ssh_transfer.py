"""remotemap.ssh.transfer against a real OpenSSH server: files and bytes moved byte-exact both
ways by the OpenSSH lane and by SFTP, odd names, errors, and host keys checked by the lane."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotemap.ssh import Connection, HostKeyError, transfer
from tests.infra.sshd import SSHServer, generate_key, known_hosts_line
from tests.ssh_connection_support import connect, ssh

BIG = transfer.FAST_LANE_MIN_BYTES + 12345  # past the threshold, not a multiple of any block
NAMES = ["plain.bin", "with space.bin", "quote'and\"double.bin", "-leading-dash",
         "$(touch pwned);`id`.bin"]  # fmt: skip


@pytest.fixture
def no_ssh_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH where every program of the real one is found except ssh, scp and rsync."""
    bin_dir = tmp_path / "bin-without-ssh"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for entry in Path(folder).glob("*") if os.path.isdir(folder) else []:
            if entry.name not in ("ssh", "scp", "rsync") and not (bin_dir / entry.name).exists():
                (bin_dir / entry.name).symlink_to(entry)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("ssh") is None


@pytest.fixture(params=["openssh", "sftp"])
def lane_conn(request: pytest.FixtureRequest, sshd_host: SSHServer) -> Iterator[Connection]:
    """A connection whose large transfers go through OpenSSH, or (no ssh on PATH) by SFTP."""
    if request.param == "sftp":
        request.getfixturevalue("no_ssh_path")
    with connect(sshd_host) as conn:
        conn.makedirs_private("xfer")
        yield conn
        conn.remove_tree("xfer")


def _lane_used(conn: Connection) -> bool:
    lane = conn.fast_lane
    return lane is not None and lane.disabled is None and lane.started


@ssh
@pytest.mark.parametrize("size", [0, 1, BIG])
def test_files_and_bytes_round_trip_byte_exact(lane_conn: Connection, tmp_path: Path,
                                               size: int) -> None:
    data = os.urandom(size)
    for name in NAMES:
        local = tmp_path / f"local {name}"
        local.write_bytes(data)
        remote = f"xfer/{name}"
        transfer.put_file(lane_conn, local, remote)
        back = tmp_path / f"back {name}"
        transfer.get_file(lane_conn, remote, back)
        assert back.read_bytes() == data, name
        assert transfer.get_bytes(lane_conn, remote) == data, name
        transfer.put_bytes(lane_conn, remote, data[::-1], mode=0o640)
        assert transfer.get_bytes(lane_conn, remote) == data[::-1], name
        attrs = lane_conn.sftp().stat(f"xfer/{name}")
        assert stat.S_IMODE(attrs.st_mode or 0) == 0o640, name
    # Only the targets: no temporary file left, nothing made by a name run as a command.
    assert sorted(lane_conn.listdir("xfer")) == sorted(NAMES)
    assert lane_conn.run(["ls", "pwned"]).exit_status != 0
    expect_lane = size >= transfer.FAST_LANE_MIN_BYTES and shutil.which("ssh") is not None
    assert _lane_used(lane_conn) == expect_lane


@ssh
def test_put_bytes_writes_parts_one_after_the_other(lane_conn: Connection) -> None:
    parts = [b"tag-", os.urandom(BIG), b"", b"-end"]
    transfer.put_bytes(lane_conn, "xfer/parts", parts)
    assert transfer.get_bytes(lane_conn, "xfer/parts") == b"".join(parts)
    transfer.put_bytes(lane_conn, "xfer/parts", [b"small ", b"parts"])
    assert transfer.get_bytes(lane_conn, "xfer/parts") == b"small parts"


@ssh
def test_without_ssh_on_path_transfers_fall_back_to_sftp(
    sshd_host: SSHServer, tmp_path: Path, no_ssh_path: None
) -> None:
    data = os.urandom(BIG)
    with connect(sshd_host) as conn:
        transfer.put_bytes(conn, "fallback.bin", data)
        assert transfer.get_bytes(conn, "fallback.bin") == data
        assert conn.fast_lane is not None and conn.fast_lane.disabled == "no ssh program on PATH"
        conn.remove("fallback.bin")


@ssh
def test_missing_remote_file_or_folder_is_a_file_error_naming_host_and_path(
    lane_conn: Connection, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"127\.0\.0\.1:\d+:xfer/nothing-here"):
        transfer.get_file(lane_conn, "xfer/nothing-here", tmp_path / "got")
    assert list(tmp_path.glob("*got*")) == []  # no local file, not even a temporary one
    local = tmp_path / "big"
    local.write_bytes(os.urandom(BIG))
    with pytest.raises(FileNotFoundError, match=r"xfer/no-such-dir/big"):
        transfer.put_file(lane_conn, local, "xfer/no-such-dir/big")
    with pytest.raises(PermissionError, match="/etc/passwd"):
        transfer.put_file(lane_conn, local, "/etc/passwd")


@ssh
@pytest.mark.parametrize("known", ["wrong key", "other host only"])
def test_openssh_lane_refuses_a_host_key_known_hosts_does_not_hold(
    sshd_host: SSHServer, tmp_path: Path, known: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    shutil.copy(sshd_host.known_hosts, known_hosts)
    local = tmp_path / "big"
    local.write_bytes(os.urandom(BIG))
    with connect(sshd_host, known_hosts=known_hosts) as conn:
        conn.connect()  # paramiko checked the key; now the file no longer agrees with the host
        conn.makedirs_private("xfer-keys")
        conn.put_bytes("xfer-keys/there", bytes(BIG))  # by SFTP: the lane is not started yet
        other = generate_key(tmp_path / "other_host_key", "other")
        name = sshd_host.known_hosts_name if known == "wrong key" else "elsewhere.example"
        known_hosts.write_text(known_hosts_line(name, other.with_suffix(".pub")))
        with pytest.raises(HostKeyError, match=r"host key of \[127\.0\.0\.1\]:\d+") as caught:
            transfer.put_file(conn, local, "xfer-keys/big")
        assert caught.value.host == "127.0.0.1"
        with pytest.raises(HostKeyError):
            transfer.get_file(conn, "xfer-keys/there", tmp_path / "got")
        assert list(tmp_path.glob("*got*")) == []
        # Nothing sent, not even a temporary file.
        assert conn.listdir("xfer-keys") == ["there"]
        conn.remove_tree("xfer-keys")


@ssh
def test_closing_the_connection_ends_the_openssh_master(
    sshd_host: SSHServer, tmp_path: Path
) -> None:
    with connect(sshd_host) as conn:
        transfer.put_bytes(conn, "master.bin", bytes(BIG))
        lane = conn.fast_lane
        assert lane is not None and lane._master is not None
        master = lane._master
        socket_dir = lane._dir
        assert socket_dir is not None and stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700
        conn.remove("master.bin")
    assert master.poll() is not None  # ended and reaped
    assert not os.path.exists(socket_dir)


_NEVER_CLOSED = """
import sys
from remotemap.ssh import Connection, transfer
conn = Connection("127.0.0.1", user=sys.argv[1], port=int(sys.argv[2]), key_file=sys.argv[3],
                  known_hosts=sys.argv[4], ssh_config="/dev/null", allow_agent=False)
transfer.put_bytes(conn, "unclosed.bin", bytes(int(sys.argv[5])))
print(conn.fast_lane._master.pid, conn.fast_lane._dir)
"""  # the program ends without closing its connection


@ssh
def test_a_connection_never_closed_still_ends_its_master(sshd_host: SSHServer) -> None:
    import subprocess
    import sys

    s = sshd_host
    argv = [sys.executable, "-c", _NEVER_CLOSED, s.user.name, str(s.port), str(s.client_key),
            str(s.known_hosts), str(BIG)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    pid, socket_dir = out.split()
    assert not os.path.exists(socket_dir)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # ended and reaped by the program before it exited
    with connect(sshd_host) as conn:
        conn.remove("unclosed.bin")
