"""The isolated test host is another machine for the code: none of the caller's paths exist
there (the checkout, its venv, the caller's home, a temp file), ``import remotemap`` finds the
wheel's install, the hostname and the user are its own; and it is gone after a stop."""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import remote_map
from remotemap.ssh import HostKeyUnknown
from tests.infra.host_python import HOST_PYTHON_DIR
from tests.infra.login_user import REPO
from tests.infra.netns import cleanup_stale_netns
from tests.infra.system import run
from tests.isolated_fixtures import IsolatedSSHHost

pytestmark = pytest.mark.ssh

# The host has remotemap but not this test suite: these functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def exists(path: str) -> bool:
    return os.path.lexists(path)


def where_remotemap_is() -> dict[str, str]:
    import remotemap

    dist = importlib.metadata.distribution("remotemap")
    return {"file": str(remotemap.__file__), "prefix": sys.prefix,
            "direct_url": dist.read_text("direct_url.json") or ""}  # fmt: skip


def who_and_where() -> tuple[str, str, int, str]:
    return socket.gethostname(), getpass.getuser(), os.getuid(), os.path.expanduser("~")


def read(path: str) -> str:
    return Path(path).read_text()


def test_caller_paths_do_not_exist_there(isolated_ssh_host: IsolatedSSHHost,
                                         tmp_path: Path) -> None:
    made_here = tmp_path / "made-by-the-test.txt"
    made_here.write_text("caller only")
    home_file = next(p for p in Path.home().iterdir() if p.is_file())
    # (The caller's home directory itself, /root, is there as on any machine: empty.)
    caller = [REPO, REPO / "remotemap" / "__init__.py", Path(sys.executable), home_file,
              made_here, tmp_path]  # fmt: skip
    assert all(p.exists() for p in caller)
    seen = remote_map(exists, [(str(p),) for p in caller], mode="ssh", progress=False,
                      **isolated_ssh_host.options())
    assert seen == [False] * len(caller), dict(zip(map(str, caller), seen, strict=True))
    # As root there too (the login user could not look into /root at all).
    quoted = [str(p) for p in caller]
    listing = isolated_ssh_host.as_root(["sh", "-c", 'for p; do [ -e "$p" ] && echo "$p"; '
                                         'done; true', "sh", *quoted])  # fmt: skip
    assert listing == ""


def test_the_exchange_directory_is_shared_both_ways(isolated_ssh_host: IsolatedSSHHost,
                                                    shared_dir: Path) -> None:
    assert shared_dir.is_relative_to(isolated_ssh_host.exchange)
    (shared_dir / "in").write_text("from the caller")
    assert remote_map(read, [(str(shared_dir / "in"),)], mode="ssh", progress=False,
                      **isolated_ssh_host.options()) == ["from the caller"]


def test_import_remotemap_finds_the_wheels_install(isolated_ssh_host: IsolatedSSHHost) -> None:
    (found,) = remote_map(where_remotemap_is, [()], mode="ssh", progress=False,
                          **isolated_ssh_host.options())
    assert found["prefix"] == str(HOST_PYTHON_DIR)
    assert Path(found["file"]).is_relative_to(HOST_PYTHON_DIR / "lib")
    assert str(REPO) not in json.dumps(found)
    url = json.loads(found["direct_url"])  # pip's record of where it came from: a wheel
    assert url["url"].endswith(".whl") and "archive_info" in url, url


def test_hostname_and_user_are_its_own(isolated_ssh_host: IsolatedSSHHost) -> None:
    ((hostname, user, uid, home),) = remote_map(who_and_where, [()], mode="ssh", progress=False,
                                                **isolated_ssh_host.options())
    assert (hostname, user, home) == (isolated_ssh_host.hostname, isolated_ssh_host.user,
                                      str(isolated_ssh_host.home))  # fmt: skip
    assert hostname != socket.gethostname() and user != getpass.getuser()
    with pytest.raises(KeyError):  # the user exists on the host only
        pwd.getpwuid(uid)


def test_host_key_is_verified(isolated_ssh_host: IsolatedSSHHost, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(isolated_ssh_host.ssh_config.read_text().replace(
        str(isolated_ssh_host.known_hosts), str(tmp_path / "empty_known_hosts")))
    with pytest.raises(HostKeyUnknown) as info:
        remote_map(exists, [("/",)], mode="ssh", progress=False,
                   **{**isolated_ssh_host.options(), "ssh_config": str(config)})
    assert isolated_ssh_host.host.server is not None
    assert isolated_ssh_host.host.server.host_fingerprint() in str(info.value)


def test_openssh_reaches_it_as_its_user(isolated_ssh_host: IsolatedSSHHost) -> None:
    done = isolated_ssh_host.ssh("hostname; id -un; ls -A /home")
    assert done.returncode == 0, done.stderr
    user = isolated_ssh_host.user
    assert done.stdout.split() == [isolated_ssh_host.hostname, user, user]


def hold_then_kill(script: str, venv: Path) -> dict[str, Any]:
    """Run ``script`` (which starts a host with the venv ``venv`` and prints what it left as
    one JSON line) in a process of its own, then SIGKILL that process: what it printed."""
    holder = subprocess.Popen([sys.executable, "-c", script, str(venv)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        left: dict[str, Any] = json.loads(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    return left


_HOLD_A_HOST = """
import json, sys, time
from tests.infra.isolated_host import IsolatedHost
host = IsolatedHost(__import__("pathlib").Path(sys.argv[1]))
host.start()
mounts = __import__("os").readlink(f"/proc/{host.server.pid}/ns/mnt")
print(json.dumps({"namespaces": [host.client_ns, host.host_ns], "subnet": str(host.subnet),
                  "sshd": host.server.pid, "paths": [str(p) for p in host.leftovers()],
                  "mounts": mounts}), flush=True)
time.sleep(600)
"""


def test_a_killed_test_process_leaves_nothing_after_the_next_start(
        isolated_ssh_host: IsolatedSSHHost) -> None:
    """SIGKILL gives no chance to clean up: the next start's reaper removes the namespaces,
    the route, the processes (so the mounts, which die with the mount namespace's last one)
    and the files."""
    left = hold_then_kill(_HOLD_A_HOST, isolated_ssh_host.host.venv)
    assert _running(left["sshd"])  # orphaned, still running
    assert left["mounts"] in _mount_namespaces()
    assert set(left["namespaces"]) <= set(_netns_names())
    cleanup_stale_netns()
    deadline = time.monotonic() + 5  # SIGKILL takes effect soon, not at once
    while _running(left["sshd"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(left["sshd"])
    assert left["mounts"] not in _mount_namespaces()  # its tmpfs and bind mounts with it
    assert not set(left["namespaces"]) & set(_netns_names())
    assert run(["ip", "route", "show", "exact", left["subnet"]]) == ""
    assert not any(Path(p).exists() for p in left["paths"])
    assert isolated_ssh_host.ssh("true").returncode == 0  # another session's host is untouched


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a parent that never reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _mount_namespaces() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            found.add(os.readlink(entry / "ns" / "mnt"))
        except OSError:
            continue
    return found


def _netns_names() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line]
