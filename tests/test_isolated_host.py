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
import sys
from pathlib import Path

import cloudpickle
import pytest

from remotemap import remote_map
from remotemap.ssh import HostKeyUnknown
from tests.infra.host_python import HOST_PYTHON_DIR
from tests.infra.login_user import REPO
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
