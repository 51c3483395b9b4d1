"""What the ssh mode says when a host cannot be reached: the truth about what happens next.

A closed loopback port is the unreachable host (nothing listens there, so the connection is
refused at once); the real test sshd is the host that works.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cloudpickle
import pytest

from remotemap import remote_map
from remotemap.ssh import HostUnreachable
from tests.infra.sshd import SSHServer, free_port

pytestmark = pytest.mark.ssh

cloudpickle.register_pickle_by_value(sys.modules[__name__])

STOPS = "no other host is left: the run stops"
GOES_ON = "the run goes on without it"


def _warnings(caplog: pytest.LogCaptureFixture, host: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and f"ssh host {host} " in r.getMessage()]


def test_the_only_host_unreachable_says_the_run_stops(
        remote_python: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="remotemap"), \
            pytest.raises(HostUnreachable, match=host):
        remote_map(abs, [(1,)], mode="ssh", hosts=[host], python=str(remote_python),
                   connect_timeout=3, progress=False)
    [said] = _warnings(caplog, host)
    assert STOPS in said and GOES_ON not in said, said


def test_unreachable_among_others_names_the_hosts_the_run_goes_on_with(
        sshd_host: SSHServer, remote_python: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        got = remote_map(abs, [(-i,) for i in range(6)], mode="ssh",
                         hosts=[host, sshd_host.alias], ssh_config=str(sshd_host.ssh_config),
                         python=str(remote_python), progress=False)
    assert got == list(range(6))
    [said] = _warnings(caplog, host)
    assert f"{GOES_ON}, on {sshd_host.alias}" in said and STOPS not in said, said


def test_two_unreachable_hosts_the_last_one_says_the_run_stops(
        remote_python: Path, caplog: pytest.LogCaptureFixture) -> None:
    ports = {free_port()}
    while len(ports) < 2:  # two distinct hosts, so each message is told apart
        ports.add(free_port())
    hosts = [f"127.0.0.1:{port}" for port in sorted(ports)]
    with caplog.at_level(logging.WARNING, logger="remotemap"), \
            pytest.raises(HostUnreachable):
        remote_map(abs, [(1,)], mode="ssh", hosts=hosts, python=str(remote_python),
                   connect_timeout=3, progress=False)
    said = {host: _warnings(caplog, host) for host in hosts}
    assert all(len(lines) == 1 for lines in said.values()), said
    # whichever failed first saw the other still in the run; the second saw none left
    first = next(h for h in hosts if GOES_ON in said[h][0])
    other = next(h for h in hosts if h != first)
    assert f"{GOES_ON}, on {other}" in said[first][0]
    assert STOPS in said[other][0], said
