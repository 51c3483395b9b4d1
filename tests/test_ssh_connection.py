"""remotemap.ssh connecting to a real OpenSSH server (and a second one in a network
namespace): keys, host keys, authentication, unreachable hosts, ProxyCommand and ProxyJump.

Commands and files over a connection are in test_ssh_connection_commands.py, the parts that
need no server (quoting, known_hosts, host specs) in test_ssh_connection_hosts.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from remotemap.ssh import (
    AuthenticationFailed,
    Connection,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    resolve_host,
)
from tests.infra.sshd import NetnsHost, SSHServer, free_port, generate_key, known_hosts_line
from tests.ssh_connection_support import connect, ssh

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
