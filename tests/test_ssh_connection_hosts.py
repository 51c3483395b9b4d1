"""The pure-Python parts of remotemap.ssh, without a server: quoting, remote paths, host specs,
known_hosts matching, resolving a host from arguments, ssh config and defaults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from pathlib import Path

import pytest

from remotemap.errors import ConfigError
from remotemap.ssh import (
    Connection,
    HostUnreachable,
    quote_argv,
    resolve_host,
)
from remotemap.ssh.hosts import split_host_spec
from remotemap.ssh.known_hosts import KnownHosts, parse_line
from remotemap.ssh.quoting import remote_path

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
