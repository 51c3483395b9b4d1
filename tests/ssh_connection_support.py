"""What the tests of remotemap.ssh against a real OpenSSH server share (the servers are the
session fixtures of tests/ssh_fixtures.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from remotemap.ssh import Connection
from tests.infra.sshd import SSHServer

ssh = pytest.mark.ssh


def connect(server: SSHServer, **overrides: Any) -> Connection:
    """A connection to ``server`` by address, with nothing from ~/.ssh except known_hosts."""
    settings: dict[str, Any] = {
        "user": server.user.name, "port": server.port, "key_file": server.client_key,
        "known_hosts": server.known_hosts, "ssh_config": os.devnull, "allow_agent": False,
        "connect_timeout": 5.0,
    }  # fmt: skip
    settings.update(overrides)
    return Connection(server.host, **settings)
