"""remotemap.ssh against a real OpenSSH server (and a second one in a network namespace).

Tests marked ``ssh`` use the session fixtures of tests/ssh_fixtures.py; the others are plain
unit tests of the pure-Python parts (quoting, known_hosts, host specs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap._version import __version__
from remotemap.errors import ConfigError
from remotemap.ssh import (
    AuthenticationFailed,
    CommandTimeout,
    Connection,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    RemoteCommandFailed,
    probe,
    quote_argv,
    resolve_host,
)
from remotemap.ssh.hosts import split_host_spec
from remotemap.ssh.known_hosts import KnownHosts, parse_line
from remotemap.ssh.quoting import remote_path
from tests.infra.sshd import NetnsHost, SSHServer, free_port, generate_key, known_hosts_line

ssh = pytest.mark.ssh

#: Arguments a shell would mangle if they were not quoted exactly.
NASTY_ARGS = [
    "plain", "two words", "it's", 'say "hi"', "$HOME", "${PATH}", "a;b", "a && b", "`id`",
    "$(id)", "line1\nline2", "tab\there", "", " ", "*", "~", "back\\slash", "'", '"', "\\",
    "-n", "--", "ünïcödé ✓", "#comment", "a|b", "<in", ">out", "!x", "{a,b}",
]  # fmt: skip


def connect(server: SSHServer, **overrides: Any) -> Connection:
    """A connection to ``server`` by address, with nothing from ~/.ssh except known_hosts."""
    settings: dict[str, Any] = {
        "user": server.user.name, "port": server.port, "key_file": server.client_key,
        "known_hosts": server.known_hosts, "ssh_config": os.devnull, "allow_agent": False,
        "connect_timeout": 5.0,
    }  # fmt: skip
    settings.update(overrides)
    return Connection(server.host, **settings)


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


# -- connecting --------------------------------------------------------------------------------


@ssh
def test_connect_with_the_right_key(sshd_host: SSHServer) -> None:
    def connected(c: Connection) -> bool:  # a call: mypy would keep a narrowed attribute
        return c.is_connected

    with connect(sshd_host) as c:
        assert not connected(c)  # lazy
        assert c.run(["id", "-un"]).stdout == b"rmtest\n"
        assert connected(c)
    assert not connected(c)


@ssh
def test_ssh_config_alias_is_resolved(sshd_host: SSHServer) -> None:
    spec = resolve_host(sshd_host.alias, ssh_config=sshd_host.ssh_config)
    assert (spec.hostname, spec.port, spec.user) == ("127.0.0.1", sshd_host.port, "rmtest")
    assert spec.key_files == (sshd_host.client_key,)
    assert spec.known_hosts[0] == sshd_host.known_hosts
    from_config = f"ssh config {sshd_host.ssh_config}"
    for setting in ("hostname", "port", "user", "key_files", "known_hosts"):
        assert spec.source(setting) == from_config, setting
    assert spec.source("host_key_policy") == "default"
    assert (
        resolve_host(sshd_host.alias, ssh_config=sshd_host.ssh_config, port=1).source("port")
        == "argument"
    )
    with Connection(sshd_host.alias, ssh_config=sshd_host.ssh_config, allow_agent=False) as c:
        assert c.run(["whoami"]).stdout_text.strip() == "rmtest"


@ssh
def test_unknown_host_key_is_rejected_with_its_fingerprint(
    sshd_host: SSHServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    with pytest.raises(HostKeyUnknown) as info, connect(sshd_host, known_hosts=empty) as c:
        c.connect()
    expected = sshd_host.host_fingerprint()  # from ssh-keygen -lf
    assert info.value.fingerprint == expected
    assert expected in str(info.value)
    assert f"[127.0.0.1]:{sshd_host.port}" in str(info.value)
    assert (info.value.host, info.value.port, info.value.user) == (
        "127.0.0.1", sshd_host.port, "rmtest",
    )  # fmt: skip
    assert empty.read_text() == ""


@ssh
def test_accept_new_records_the_key_then_a_changed_key_is_refused(
    sshd_host: SSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # its folder does not exist yet
    with connect(sshd_host, known_hosts=known, host_key_policy="accept-new") as c:
        assert c.run(["true"]).ok
    assert known.read_text() == known_hosts_line(
        f"[127.0.0.1]:{sshd_host.port}", sshd_host.host_key_pub
    )
    assert known.stat().st_mode & 0o777 == 0o600
    with connect(sshd_host, known_hosts=known) as c:  # now known under "reject"
        assert c.run(["true"]).ok

    other = generate_key(tmp_path / "other_host_key")
    known.write_text(known_hosts_line(f"[127.0.0.1]:{sshd_host.port}", other.with_suffix(".pub")))
    before = known.read_text()
    for policy in ("accept-new", "reject"):
        with (
            pytest.raises(HostKeyChanged) as info,
            connect(sshd_host, known_hosts=known, host_key_policy=policy) as c,
        ):
            c.run(["true"])
        assert "host key changed" in str(info.value)
        assert info.value.fingerprint == sshd_host.host_fingerprint()
        assert (
            info.value.expected_fingerprint
            == subprocess.run(
                ["ssh-keygen", "-lf", str(other.with_suffix(".pub"))],
                capture_output=True,
                text=True,
            ).stdout.split()[1]
        )
        assert info.value.known_hosts_file == str(known)
    assert known.read_text() == before


@ssh
def test_hashed_known_hosts_entry_is_honoured(sshd_host: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd_host.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    with connect(sshd_host, known_hosts=known) as c:
        assert c.run(["true"]).ok


@ssh
@pytest.mark.parametrize("case", ["wrong key", "wrong user"])
def test_authentication_failure_is_fast_and_named(
    sshd_host: SSHServer, tmp_path: Path, case: str
) -> None:
    if case == "wrong key":
        settings: dict[str, Any] = {"key_file": generate_key(tmp_path / "stranger")}
        user = "rmtest"
    else:
        settings = {"user": "nosuchuser"}
        user = "nosuchuser"
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as info, connect(sshd_host, **settings) as c:
        c.connect()
    assert time.monotonic() - started < 3.0
    assert (info.value.host, info.value.user) == ("127.0.0.1", user)
    assert f"{user}@127.0.0.1:{sshd_host.port}" in str(info.value)


@ssh
def test_password_is_never_shown(sshd_host: SSHServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "hunter2-" + uuid.uuid4().hex
    caplog.set_level("DEBUG")
    with (
        pytest.raises(AuthenticationFailed) as info,
        connect(sshd_host, user="nosuchuser", password=secret) as c,
    ):
        assert secret not in repr(c)
        c.connect()
    assert "password" in info.value.tried
    assert secret not in str(info.value) and secret not in caplog.text


@ssh
def test_closed_port_is_unreachable_fast(sshd_host: SSHServer) -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as info, connect(sshd_host, port=port) as c:
        c.connect()
    assert time.monotonic() - started < 1.0
    assert info.value.reason == "connection refused"
    assert (info.value.host, info.value.port) == ("127.0.0.1", port)
    assert f"127.0.0.1:{port}" in str(info.value)


@ssh
def test_silent_server_times_out_within_the_connect_timeout(sshd_host: SSHServer) -> None:
    with socket.socket() as listener:  # accepts (kernel backlog) but never speaks SSH
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        with (
            pytest.raises(HostUnreachable) as info,
            connect(sshd_host, port=port, connect_timeout=0.7) as c,
        ):
            c.connect()
        elapsed = time.monotonic() - started
    assert 0.6 < elapsed < 2.0
    assert str(port) in str(info.value)


@ssh
def test_namespace_address_from_outside_hits_the_blackhole(netns_host: NetnsHost) -> None:
    assert netns_host.is_blackholed()  # THE NETWORK RULE: never let this leave the machine
    started = time.monotonic()
    with (
        pytest.raises(HostUnreachable) as info,
        Connection(
            netns_host.host_addr, port=22, user="rmtest", ssh_config=os.devnull, connect_timeout=5
        ) as c,
    ):
        c.connect()
    assert time.monotonic() - started < 1.0
    assert f"{netns_host.host_addr}:22" in str(info.value)


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


# -- hops --------------------------------------------------------------------------------------


@ssh
def test_netns_host_through_proxy_command(netns_host: NetnsHost) -> None:
    server = netns_host.server
    assert server is not None
    with Connection(server.alias, ssh_config=server.ssh_config, allow_agent=False) as c:
        assert c.spec.proxy_command is not None
        assert c.run(["hostname"]).stdout_text.strip() == netns_host.hostname
        assert netns_host.hostname != socket.gethostname()
        interfaces = c.run(["ls", "/sys/class/net"]).stdout_text.split()
        assert set(interfaces) == {"lo", netns_host._veth[1]}
        assert c.run(["echo", "a b"]).stdout == b"a b\n"
    with Connection(
        netns_host.host_addr, port=22, user="rmtest", key_file=server.client_key,
        known_hosts=server.known_hosts, ssh_config=os.devnull, allow_agent=False,
        proxy_command=netns_host.proxy_command,
    ) as c:  # fmt: skip
        assert c.run(["hostname"]).stdout_text.strip() == netns_host.hostname


@ssh
def test_proxy_jump(sshd_host: SSHServer, tmp_path: Path) -> None:
    block = [
        "    HostName 127.0.0.1",
        f"    Port {sshd_host.port}",
        "    User rmtest",
        f"    IdentityFile {sshd_host.client_key}",
        f"    UserKnownHostsFile {sshd_host.known_hosts}",
    ]
    config = tmp_path / "ssh_config"
    config.write_text("\n".join(["Host behind", "    ProxyJump jumpbox", *block,
                                 "Host jumpbox", *block]) + "\n")  # fmt: skip
    logins_before = sshd_host.log_text().count("Accepted publickey")
    with Connection("behind", ssh_config=config, allow_agent=False) as c:
        assert c.spec.proxy_jump == "jumpbox"
        assert c.run(["echo", "through"]).stdout == b"through\n"
    assert sshd_host.log_text().count("Accepted publickey") == logins_before + 2


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


# -- pure-Python parts (no server) -------------------------------------------------------------


def test_quote_argv_rejects_what_cannot_be_passed() -> None:
    assert quote_argv(["echo", "a b", "$x"]) == "echo 'a b' '$x'"
    for bad in ("echo hi", [], ["a\0b"]):
        with pytest.raises((TypeError, ValueError)):
            quote_argv(bad)


def test_remote_path() -> None:
    assert remote_path("~") == "."
    assert remote_path("~/a//b/") == "a/b"
    assert remote_path("/abs/./x") == "/abs/x"
    with pytest.raises(ValueError):
        remote_path("~other/x")


def test_split_host_spec() -> None:
    assert split_host_spec("host") == (None, "host", None)
    assert split_host_spec("me@host:2222") == ("me", "host", 2222)
    assert split_host_spec("[::1]:2200") == (None, "::1", 2200)
    assert split_host_spec("ssh://u@h:23") == ("u", "h", 23)
    assert split_host_spec("fe80::1") == (None, "fe80::1", None)


def test_known_hosts_matching(tmp_path: Path) -> None:
    blob, other = b"\0\0\0\x0bssh-ed25519key-one", b"\0\0\0\x0bssh-ed25519key-two"
    b64, b64_other = base64.b64encode(blob).decode(), base64.b64encode(other).decode()
    salt = os.urandom(20)
    hashed = base64.b64encode(hmac.new(salt, b"[h.example]:2222", hashlib.sha1).digest())
    path = tmp_path / "known_hosts"
    path.write_text(
        f"# comment\n"
        f"*.corp,!bad.corp ssh-ed25519 {b64}\n"
        f"|1|{base64.b64encode(salt).decode()}|{hashed.decode()} ssh-ed25519 {b64}\n"
        f"@revoked * ssh-ed25519 {b64_other}\n"
        f"@cert-authority *.ca ssh-ed25519 {b64}\n"
        f"garbage line\n"
    )
    known = KnownHosts.load([path, tmp_path / "missing"])
    assert known.check("a.corp", "ssh-ed25519", blob).status == "ok"
    assert known.check("bad.corp", "ssh-ed25519", blob).status == "unknown"
    assert known.check("[h.example]:2222", "ssh-ed25519", blob).status == "ok"
    assert known.check("h.example", "ssh-ed25519", blob).status == "unknown"
    assert known.check("a.corp", "ssh-ed25519", other).status == "revoked"
    assert known.check("x.ca", "ssh-ed25519", blob).status == "unknown"
    changed = known.check("[h.example]:2222", "ecdsa-sha2-nistp256", b"zz")
    assert changed.status == "changed" and changed.entry is not None
    assert changed.entry.location == f"{path}:3"
    assert parse_line("[1.2.3.4]:22 ssh-rsa !!notbase64", path, 1) is None


def test_resolve_host_layers_arguments_over_config_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "Host gpu*\n"
        "    HostName %h.cluster.example\n"
        "    Port 2200\n"
        "    User alice\n"
        "    IdentityFile ~/.ssh/one\n"
        "    IdentityFile /keys/two\n"
        "    ProxyCommand ssh-proxy %h %p\n"
        "    ConnectTimeout 4\n"
        "    ServerAliveInterval 15\n"
        "    StrictHostKeyChecking accept-new\n"
        "    UserKnownHostsFile /kh/a /kh/b\n"
        "Host *\n"
        "    User nobody-else\n"
        "    HostKeyAlias shared-alias\n"
    )
    spec = resolve_host("gpu1", ssh_config=config)
    assert spec.hostname == "gpu1.cluster.example"
    assert (spec.port, spec.user, spec.connect_timeout, spec.keepalive) == (2200, "alice", 4, 15)
    assert spec.key_files == (Path("~/.ssh/one").expanduser(), Path("/keys/two"))
    assert spec.proxy_command == "ssh-proxy gpu1.cluster.example 2200"
    assert spec.host_key_policy == "accept-new"
    assert spec.known_hosts[:2] == (Path("/kh/a"), Path("/kh/b"))
    assert spec.known_hosts_name == "shared-alias"
    assert spec.target == "alice@gpu1.cluster.example:2200"

    over = resolve_host(
        "bob@gpu2:2022", ssh_config=config, key_file="/k", known_hosts="/mine",
        host_key_policy="reject", connect_timeout=1.5,
    )  # fmt: skip
    assert (over.user, over.port, over.key_files) == ("bob", 2022, (Path("/k"),))
    assert over.source("user") == "host spec" and over.source("key_files") == "argument"
    assert over.known_hosts[0] == Path("/mine") and over.host_key_policy == "reject"
    assert over.connect_timeout == 1.5

    other = resolve_host("plain.example", ssh_config=config)
    assert (other.hostname, other.port, other.user) == ("plain.example", 22, "nobody-else")
    assert other.source("port") == "default" and other.proxy_command is None
    with pytest.raises(ConfigError):
        resolve_host("x", ssh_config=tmp_path / "missing")
    with pytest.raises(ConfigError):
        resolve_host("x", ssh_config=config, host_key_policy="yolo")  # type: ignore[arg-type]


def test_failing_proxy_command_is_reported() -> None:
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as info, Connection(
        "somewhere", user="u", ssh_config=os.devnull, allow_agent=False, connect_timeout=5,
        proxy_command="sh -c 'echo no route today >&2; exit 3'",
    ) as c:  # fmt: skip
        c.connect()
    assert time.monotonic() - started < 2
    assert "exited with status 3: no route today" in str(info.value)
    assert "u@somewhere:22" in str(info.value)
