"""The ssh mode against real sshd servers: several hosts, faults, quoting, files back.

The contract suite (test_contract.py) already runs every common behaviour on ssh; these tests
cover what only a remote run has.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import RemoteException, remote_map
from remotemap.backends.remote_files import RemoteSetupError
from remotemap.ssh import HostKeyUnknown, HostUnreachable
from tests.infra.sshd import NetnsHost, SSHServer, free_port

pytestmark = pytest.mark.ssh

# The hosts have remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _options(server: SSHServer, python: Path, **more: Any) -> dict[str, Any]:
    return {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
            "python": str(python), "progress": False, **more}


def _hostname_after(x: int, seconds: float = 0.0) -> tuple[int, str]:
    time.sleep(seconds)
    return x, socket.gethostname()


def test_tasks_spread_over_two_hosts_across_a_real_link(
        sshd_host: SSHServer, netns_host: NetnsHost, remote_python: Path, tmp_path: Path) -> None:
    assert netns_host.is_blackholed()
    assert netns_host.server is not None
    config = tmp_path / "ssh_config"
    config.write_text(sshd_host.ssh_config.read_text() + netns_host.server.ssh_config.read_text())
    got = remote_map(_hostname_after, [(i, 0.05) for i in range(40)], mode="ssh",
                     hosts=[sshd_host.alias, netns_host.server.alias], ssh_config=str(config),
                     python=str(remote_python), chunksize=2, n_jobs=2, progress=False)
    assert [x for x, _ in got] == list(range(40))
    hosts = {h for _, h in got}
    assert len(hosts) == 2, hosts  # both hosts took work
    assert "rmtest-netns-host" in hosts


def test_failures_name_the_remote_host(sshd_host: SSHServer, remote_python: Path) -> None:
    def crash_or_raise(x: int) -> int:
        if x == 1:
            raise ValueError("remote failure")
        if x == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    with pytest.raises(RemoteException) as info:
        remote_map(crash_or_raise, [(i,) for i in range(4)], mode="ssh", chunksize=1,
                   **_options(sshd_host, remote_python))
    raised, crashed = info.value.failures
    assert raised.host == socket.gethostname()  # the worker's own hostname (same machine here)
    assert "crash_or_raise" in raised.traceback
    assert crashed.host == sshd_host.alias and "SIGKILL" in crashed.message
    assert info.value.results == [0, None, None, 3]


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd_host: SSHServer,
                                                          remote_python: Path,
                                                          tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(sshd_host.ssh_config.read_text().replace(
        str(sshd_host.known_hosts), str(empty)))
    marker = tmp_path / "ran"
    started = time.monotonic()
    with pytest.raises(HostKeyUnknown) as info:
        remote_map(lambda: marker.touch(), mode="ssh", hosts=[sshd_host.alias],
                   ssh_config=str(config), python=str(remote_python), progress=False)
    assert sshd_host.host_fingerprint() in str(info.value)
    assert str(sshd_host.port) in str(info.value)
    assert not marker.exists()
    assert time.monotonic() - started < 10


def test_unreachable_host_alone_fails_fast_naming_host_and_port(remote_python: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as info:
        remote_map(abs, [(1,)], mode="ssh", hosts=[f"127.0.0.1:{port}"],
                   python=str(remote_python), connect_timeout=3, progress=False)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert time.monotonic() - started < 5


def test_unreachable_host_among_others_is_skipped_and_said(
        sshd_host: SSHServer, remote_python: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    options = _options(sshd_host, remote_python)
    options["hosts"] = [f"127.0.0.1:{port}", sshd_host.alias]
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        assert remote_map(abs, [(-i,) for i in range(10)], mode="ssh", **options) == list(range(10))
    assert any(f"127.0.0.1:{port}" in r.getMessage() and "goes on without it" in r.getMessage()
               for r in caplog.records)


def _sshd_sessions(user: str) -> list[int]:
    """The per-connection sshd processes serving ``user`` (named ``sshd: USER...``)."""
    out = subprocess.run(["pgrep", "-f", f"sshd: {user}"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def test_connection_cut_mid_run_loses_and_duplicates_nothing(
        sshd_host: SSHServer, remote_python: Path, caplog: pytest.LogCaptureFixture) -> None:
    cut: list[int] = []

    def cut_connections() -> None:
        time.sleep(1.0)
        for pid in _sshd_sessions(sshd_host.user.name):
            os.kill(pid, signal.SIGKILL)
            cut.append(pid)

    killer = threading.Thread(target=cut_connections)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        got = remote_map(_hostname_after, [(i, 0.1) for i in range(40)], mode="ssh",
                         chunksize=1, n_jobs=2, **_options(sshd_host, remote_python))
    killer.join()
    assert cut, "no sshd session was found to cut"
    assert [x for x, _ in got] == list(range(40))  # every result, once, in order
    assert any("lost" in r.getMessage() and "reconnecting" in r.getMessage()
               for r in caplog.records)


def test_awkward_remote_paths_are_quoted(sshd_host: SSHServer, remote_python: Path) -> None:
    awkward = f".cache/rm test 'q' \"d\" $HOME ;echo x `id` {os.getpid()}"
    got = remote_map(_hostname_after, [(1,)], mode="ssh", remote_dir=awkward,
                     keep_remote_files=True, **_options(sshd_host, remote_python))
    assert got[0][0] == 1
    base = sshd_host.user.home / awkward
    (run,) = base.iterdir()  # created literally, nothing expanded or executed
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert (run / "function.pkl").exists()
    subprocess.run(["rm", "-rf", "--", str(sshd_host.user.home / ".cache" / base.name)],
                   check=True)


def test_run_directory_removed_after_the_run(sshd_host: SSHServer, remote_python: Path) -> None:
    remote_dir = f".cache/rm-clean-{os.getpid()}"
    assert remote_map(abs, [(-2,)], mode="ssh", remote_dir=remote_dir,
                      **_options(sshd_host, remote_python)) == [2]
    assert list((sshd_host.user.home / remote_dir).iterdir()) == []


def test_remote_without_remotemap_names_module_and_host(sshd_host: SSHServer) -> None:
    with pytest.raises(RemoteSetupError) as info:
        remote_map(abs, [(1,)], mode="ssh", hosts=[sshd_host.alias],
                   ssh_config=str(sshd_host.ssh_config), python="/usr/bin/python3",
                   progress=False)
    text = str(info.value)
    assert sshd_host.alias in text and "No module named 'remotemap'" in text


def _write_outputs(x: int) -> int:
    Path(f"result-{x}.txt").write_text(f"value {x * 10}")
    Path("scratch.tmp").write_text("not wanted")
    return x


def test_files_written_by_tasks_are_copied_back(sshd_host: SSHServer, remote_python: Path,
                                                tmp_path: Path) -> None:
    fetch_dir = tmp_path / "back"
    got = remote_map(_write_outputs, [(i,) for i in range(3)], mode="ssh", fetch=["result-*"],
                     fetch_dir=str(fetch_dir), **_options(sshd_host, remote_python))
    assert got == [0, 1, 2]
    for i in range(3):
        assert (fetch_dir / str(i) / f"result-{i}.txt").read_text() == f"value {i * 10}"
        assert not (fetch_dir / str(i) / "scratch.tmp").exists()


def test_status_lists_and_checks_hosts(sshd_host: SSHServer, remote_python: Path,
                                       tmp_path: Path) -> None:
    closed = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[ssh]\nhosts = ["{sshd_host.alias}", "127.0.0.1:{closed}"]\n'
        f'ssh_config = "{sshd_host.ssh_config}"\npython = "{remote_python}"\n'
        "connect_timeout = 3.0\n")
    env = {**os.environ, "REMOTEMAP_CONFIG": str(config)}
    listed = subprocess.run([sys.executable, "-m", "remotemap", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sshd_host.alias in listed.stdout and f"127.0.0.1:{closed}" in listed.stdout
    started = time.monotonic()
    checked = subprocess.run([sys.executable, "-m", "remotemap", "status", "--check"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 15
    assert checked.returncode == 1  # one host is unreachable
    from remotemap._version import __version__

    ok_line = next(line for line in checked.stdout.splitlines() if sshd_host.alias in line)
    assert "ok: Python 3." in ok_line and f"remotemap {__version__}" in ok_line
    bad_line = next(line for line in checked.stdout.splitlines() if f":{closed}" in line)
    assert "unreachable" in bad_line



def _slept(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_chunk_held_ready_gets_its_whole_timeout_from_its_start(
        sshd_host: SSHServer, remote_python: Path) -> None:
    # One slot: the second and third chunks are uploaded while the first runs (held ready,
    # backends.ssh.AHEAD). Counted from the upload, their 1.5 s would be half gone.
    got = remote_map(_slept, [(0.8,)] * 3, mode="ssh", timeout=1.5, chunksize=1,
                     **_options(sshd_host, remote_python, n_jobs=1))
    assert got == [0.8] * 3
