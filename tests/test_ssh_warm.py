"""Warm ssh hosts (``ssh.keep_alive``): a host's connection and worker server kept between calls.

The loopback sshd runs on this machine, so the tests see the host's processes directly: each
task reports the pid of the worker server that forked it and of the sshd process serving its
connection (the server's parent).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import RemoteException, remote_map
from tests.infra.sshd import SSHServer

pytestmark = pytest.mark.ssh

# The hosts have remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _options(server: SSHServer, python: Path, **more: Any) -> dict[str, Any]:
    return {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
            "python": str(python), "progress": False, "n_jobs": 2, **more}


def _square_where(x: int) -> tuple[int, int, int]:
    """``x * x``, the worker server's pid and its parent's (the connection's sshd)."""
    server = os.getppid()
    with open(f"/proc/{server}/stat") as f:
        sshd = int(f.read().rsplit(")", 1)[1].split()[1])
    return x * x, server, sshd


def _call(options: dict[str, Any], n: int = 6) -> tuple[int, int]:
    """One call: its results checked; the (server, sshd) pids every task saw."""
    got = remote_map(_square_where, [(i,) for i in range(n)], mode="ssh", **options)
    assert [value for value, _, _ in got] == [i * i for i in range(n)]
    where = {(server, sshd) for _, server, sshd in got}
    assert len(where) == 1, where  # one host, one server
    return where.pop()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which only waits to be reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pids: tuple[int, ...], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_second_call_reuses_the_connection_and_server_in_a_run_directory_of_its_own(
        sshd_host: SSHServer, remote_python: Path) -> None:
    runs = sshd_host.user.home / f"warm-runs-{os.getpid()}"  # relative: under the host's home
    options = _options(sshd_host, remote_python, keep_alive=30, keep_remote_files=True,
                       remote_dir=runs.name)
    try:
        first = _call(options)
        second = _call(options)
        made = {run_dir.name: run_dir.stat() for run_dir in runs.iterdir()}
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    assert second == first  # the same server, over the same connection
    assert len(made) == 2, made  # each call had its own run directory...
    for info in made.values():  # ...private to the login user
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == sshd_host.user.uid
    # Settings the server was started with (here: preload) must match, else a server of its own.
    other = _call(_options(sshd_host, remote_python, keep_alive=30, preload=False))
    assert other[0] != first[0]


def test_a_warm_server_killed_between_calls_is_replaced(
        sshd_host: SSHServer, remote_python: Path) -> None:
    options = _options(sshd_host, remote_python, keep_alive=30, env={"WARM_TEST": "killed"})
    server, _ = _call(options)
    os.kill(server, signal.SIGKILL)
    assert _gone_within((server,), 5)
    again = _call(options)
    assert again[0] != server
    assert _call(options) == again  # and the new one is kept warm in turn


def test_a_warm_connection_cut_between_calls_is_replaced(
        sshd_host: SSHServer, remote_python: Path) -> None:
    options = _options(sshd_host, remote_python, keep_alive=30, env={"WARM_TEST": "cut"})
    server, sshd = _call(options)
    os.kill(sshd, signal.SIGKILL)  # only this connection's sshd: other sessions run on
    assert _gone_within((sshd,), 5)
    again = _call(options)
    assert again[1] != sshd and again[0] != server


def test_keep_alive_zero_leaves_nothing_running_after_the_call(
        sshd_host: SSHServer, remote_python: Path) -> None:
    server, sshd = _call(_options(sshd_host, remote_python, keep_alive=0))
    assert _gone_within((server, sshd), 2), "the server or its connection outlived the call"


def test_a_warm_host_is_closed_when_its_idle_time_expires(
        sshd_host: SSHServer, remote_python: Path) -> None:
    options = _options(sshd_host, remote_python, keep_alive=0.5, env={"WARM_TEST": "expiry"})
    server, sshd = _call(options)
    assert _running(server) and _running(sshd)  # kept, for now
    assert _gone_within((server, sshd), 5), "the warm host outlived its keep_alive"
    assert _call(options)[0] != server


_EXITING_CALLER = """
import json, os, sys
from remotemap import RemoteException, remote_map

def where(x):
    server = os.getppid()
    with open(f"/proc/{server}/stat") as f:
        return server, int(f.read().rsplit(")", 1)[1].split()[1])

got = remote_map(where, [(1,)], mode="ssh", **json.loads(sys.argv[1]))
print(json.dumps(got[0]))
"""


def test_warm_hosts_are_closed_when_the_interpreter_exits(
        sshd_host: SSHServer, remote_python: Path) -> None:
    options = _options(sshd_host, remote_python, keep_alive=300)
    done = subprocess.run([sys.executable, "-c", _EXITING_CALLER, json.dumps(options)],
                          capture_output=True, text=True, timeout=120, check=True)
    server, sshd = json.loads(done.stdout.splitlines()[-1])
    assert _gone_within((server, sshd), 3), "a warm host outlived its caller's interpreter"


def _fail_first(x: int) -> int:
    """Task 0 fails at once naming its server and sshd pids; the others take a while."""
    if x == 0:
        _, server, sshd = _square_where(x)
        raise ValueError(f"{server} {sshd}")
    time.sleep(3)
    return x


def test_a_call_cut_short_leaves_no_host_warm(
        sshd_host: SSHServer, remote_python: Path) -> None:
    options = _options(sshd_host, remote_python, keep_alive=300, env={"WARM_TEST": "cut-short"})
    with pytest.raises(RemoteException) as info:
        remote_map(_fail_first, [(i,) for i in range(4)], mode="ssh", chunksize=1,
                   on_error="stop", **options)
    server, sshd = (int(word) for word in info.value.failures[0].message.split())
    assert _gone_within((server, sshd), 3), "a host of a call cut short was kept warm"
