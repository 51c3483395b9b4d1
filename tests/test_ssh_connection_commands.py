"""remotemap.ssh running commands and moving files over a connection to a real OpenSSH
server, and ``probe``; the fixtures are tests/ssh_fixtures.py's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotemap._version import __version__
from remotemap.ssh import (
    CommandTimeout,
    Connection,
    RemoteCommandFailed,
    probe,
    resolve_host,
)
from tests.infra.sshd import SSHServer, free_port
from tests.ssh_connection_support import connect, ssh

#: Arguments a shell would mangle if they were not quoted exactly.
NASTY_ARGS = [
    "plain", "two words", "it's", 'say "hi"', "$HOME", "${PATH}", "a;b", "a && b", "`id`",
    "$(id)", "line1\nline2", "tab\there", "", " ", "*", "~", "back\\slash", "'", '"', "\\",
    "-n", "--", "ünïcödé ✓", "#comment", "a|b", "<in", ">out", "!x", "{a,b}",
]  # fmt: skip


@pytest.fixture(scope="module")
def conn(sshd_host: SSHServer) -> Iterator[Connection]:
    with connect(sshd_host) as c:
        yield c


@pytest.fixture
def remote_dir(conn: Connection) -> Iterator[str]:
    """A fresh directory name in the remote home, removed afterwards."""
    path = f"rm-test-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        conn.run(["rm", "-rf", "--", path])


# -- commands ----------------------------------------------------------------------------------


@ssh
def test_arguments_round_trip_exactly(conn: Connection) -> None:
    out = conn.run(["printf", "%s\\0", *NASTY_ARGS], check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in NASTY_ARGS]
    for arg in NASTY_ARGS:
        assert conn.run(["printf", "%s\\n", arg]).stdout == arg.encode() + b"\n"


@ssh
def test_stdin_stdout_stderr_and_status(conn: Connection) -> None:
    data = os.urandom(3 << 20)  # more than the SSH window: needs concurrent write and read
    assert conn.run(["cat"], stdin=data).stdout == data
    done = conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.exit_status, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(RemoteCommandFailed) as info:
        conn.run(["sh", "-c", "echo bad >&2; exit 4"], check=True)
    assert info.value.exit_status == 4 and b"bad" in info.value.stderr
    assert conn.run(["cat"]).stdout == b""  # no stdin: EOF at once, no hang


def _running(conn: Connection, pattern: str) -> bool:
    return conn.run(["pgrep", "-f", "-u", "rmtest", pattern]).exit_status == 0


@ssh
def test_run_timeout_kills_the_command(conn: Connection) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        conn.run(["sh", "-c", "sleep 31.25 & sleep 31.5"], timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert info.value.argv == ["sh", "-c", "sleep 31.25 & sleep 31.5"]
    assert not _running(conn, "sleep 31.25") and not _running(conn, "sleep 31.5")
    assert conn.run(["echo", "still fine"], timeout=5).stdout == b"still fine\n"
    assert conn.run(["printf", "%s", "x y"], timeout=5).stdout == b"x y"  # as without timeout


@ssh
def test_threads_share_one_connection(conn: Connection) -> None:
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        results[i] = conn.run(["echo", str(i)]).stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: f"{i}\n".encode() for i in range(12)}


@ssh
def test_open_process_exchanges_lines(conn: Connection) -> None:
    echo = (
        "import sys\n"
        "print('ready', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print(line.strip().upper(), flush=True)\n"
        "    print('log', line.strip(), file=sys.stderr, flush=True)\n"
        "sys.exit(7)\n"
    )
    with conn.open_process(["/usr/bin/python3", "-u", "-c", echo]) as proc:
        assert proc.readline(timeout=10) == b"ready\n"
        with pytest.raises(CommandTimeout):
            proc.readline(timeout=0.2)  # nothing to read: times out, stays usable
        assert proc.poll() is None
        for word in ("alpha", "beta", "gamma with spaces"):
            proc.write(word.encode() + b"\n")
            assert proc.readline(timeout=10) == word.upper().encode() + b"\n"
        proc.close_stdin()
        assert proc.readline(timeout=10) == b""  # EOF
        assert proc.wait(timeout=10) == 7
        assert b"log gamma with spaces" in proc.stderr
    assert proc.closed


@ssh
def test_open_process_is_killed_when_its_block_exits(conn: Connection) -> None:
    with conn.open_process(["sh", "-c", "sleep 32.25 & sleep 32.5"]) as proc:
        assert proc.pid > 1
        assert _running(conn, "sleep 32.5")
    assert not _running(conn, "sleep 32.25") and not _running(conn, "sleep 32.5")
    with conn.open_process(["sleep", "33.5"]) as proc:
        proc.terminate()
        assert proc.wait(timeout=5) == -1  # killed by a signal: no exit status


@ssh
def test_open_process_cat(conn: Connection) -> None:
    with conn.open_process(["cat"]) as proc:
        proc.write(b"one\ntwo\nthr")
        assert proc.readline(timeout=5) == b"one\n"
        assert proc.readline(timeout=5) == b"two\n"
        proc.close_stdin()
        assert proc.readline(timeout=5) == b"thr"
        assert proc.wait(timeout=5) == 0


# -- files -------------------------------------------------------------------------------------


def _mode(conn: Connection, path: str) -> int:
    return int(conn.run(["stat", "-c", "%a", "--", path], check=True).stdout, 8)


@ssh
def test_sftp_put_get_makedirs_remove(conn: Connection, remote_dir: str) -> None:
    conn.makedirs_private(f"~/{remote_dir}/a/b")
    for path in (remote_dir, f"{remote_dir}/a", f"{remote_dir}/a/b"):
        assert _mode(conn, path) == 0o700
    conn.run(["chmod", "755", f"{remote_dir}/a/b"], check=True)
    conn.makedirs_private(f"{remote_dir}/a/b")  # exists: made private again
    assert _mode(conn, f"{remote_dir}/a/b") == 0o700

    data = os.urandom(5 << 20)
    target = f"{remote_dir}/a/b/blob.bin"
    conn.put_bytes(target, data)
    assert conn.get_bytes(target) == data
    assert _mode(conn, target) == 0o600
    digest = conn.run(["sha256sum", target]).stdout.split()[0].decode()
    assert digest == hashlib.sha256(data).hexdigest()
    conn.put_bytes(target, b"replaced", mode=0o644)  # atomic replace
    assert conn.get_bytes(target) == b"replaced" and _mode(conn, target) == 0o644
    assert conn.run(["ls", "-A", f"{remote_dir}/a/b"]).stdout == b"blob.bin\n"  # no temp left
    assert conn.sftp() is conn.sftp()  # one client, reused

    with pytest.raises(FileNotFoundError):
        conn.get_bytes(f"{remote_dir}/missing")
    with pytest.raises(FileNotFoundError):
        conn.put_bytes(f"{remote_dir}/no/such/dir/x", b"x")
    conn.remove_tree(f"~/{remote_dir}")
    assert conn.run(["test", "-e", remote_dir]).exit_status == 1
    conn.remove_tree(remote_dir)  # already gone: fine
    for bad in ("~", ".", "/", "", "..", "../x"):
        with pytest.raises(ValueError):
            conn.remove_tree(bad)


# -- probe -------------------------------------------------------------------------------------


@ssh
def test_probe(sshd_host: SSHServer, remote_python: Path, tmp_path: Path) -> None:
    spec = resolve_host(sshd_host.alias, ssh_config=sshd_host.ssh_config)
    found = probe(spec, remote_python=str(remote_python), allow_agent=False)
    assert found.ok, found
    assert found.remotemap_version == __version__
    expected_python = subprocess.run(
        ["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert found.python_version == expected_python
    assert found.elapsed < 5 and "Python" in found.summary()

    plain = probe(spec, remote_python="/usr/bin/python3", allow_agent=False)
    assert plain.ok and plain.remotemap_version is None
    assert probe(spec, remote_python="/no/such/python", allow_agent=False).status == "no-python"

    empty = tmp_path / "known_hosts"
    empty.touch()
    cases = {
        "unreachable": resolve_host(f"127.0.0.1:{free_port()}", ssh_config=os.devnull),
        "auth-failed": resolve_host(
            sshd_host.alias, ssh_config=sshd_host.ssh_config, user="nosuchuser"
        ),
        "host-key-unknown": resolve_host(
            f"rmtest@127.0.0.1:{sshd_host.port}", ssh_config=os.devnull, known_hosts=empty,
            key_file=sshd_host.client_key,
        ),
    }  # fmt: skip
    for status, case in cases.items():
        result = probe(case, allow_agent=False, timeout=3)
        assert result.status == status, result
        assert result.elapsed < 3.5
