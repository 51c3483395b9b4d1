"""pytest fixtures for real SSH servers (see :mod:`tests.infra.sshd`).

Load with ``pytest_plugins = [..., "tests.ssh_fixtures"]`` in tests/conftest.py.

- ``ssh_test_user``: the non-root login user (session).
- ``sshd_host``: an :class:`~tests.infra.sshd.SSHServer` on 127.0.0.1 (session).
- ``netns_host``: a :class:`~tests.infra.sshd.NetnsHost`, sshd in a network namespace (session).
- ``remote_python``: the user's venv Python with this checkout pip-installed (session; slow
  the first time on a machine, then cached by a digest of the sources).

A host that shares no files with the caller is ``isolated_ssh_host`` (tests/isolated_fixtures.py):
the contract suite's ssh runner uses it; the hosts here stay for tests that reach into the
host's files from the caller's side (fault injection) or need speed.

Each skips, with the reason, where the machine cannot run them (not root, sshd not installed,
no namespaces) - unless REMOTEMAP_REQUIRE_SSH=1 (CI sets it), where they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.infra.sshd import (
    InfraUnavailable,
    NetnsHost,
    SSHServer,
    TestUser,
    ensure_test_user,
    install_remotemap_for_user,
    netns_unavailable_reason,
    unavailable_reason,
)

REQUIRE_ENV = "REMOTEMAP_REQUIRE_SSH"


def _unavailable(what: str, reason: str) -> NoReturn:
    message = f"{what} is unavailable because {reason}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1: required here)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def ssh_test_user() -> TestUser:
    reason = unavailable_reason()
    if reason:
        _unavailable("the real sshd", reason)
    try:
        return ensure_test_user()
    except InfraUnavailable as exc:
        _unavailable("the real sshd", str(exc))


@pytest.fixture(scope="session")
def sshd_host(ssh_test_user: TestUser) -> Iterator[SSHServer]:
    try:
        server = SSHServer(ssh_test_user).start()
    except InfraUnavailable as exc:
        _unavailable("the real sshd", str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def netns_host(ssh_test_user: TestUser) -> Iterator[NetnsHost]:
    reason = netns_unavailable_reason()
    if reason:
        _unavailable("the network-namespace host", reason)
    try:
        host = NetnsHost(ssh_test_user).start()
    except InfraUnavailable as exc:
        _unavailable("the network-namespace host", str(exc))
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def remote_python(ssh_test_user: TestUser) -> Path:
    """The test user's Python, with this checkout installed for remote workers."""
    return install_remotemap_for_user(ssh_test_user)
