"""Probed ssh bugs, against the real test sshd: remote_dir, ``~`` in python, odd file names."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import remote_map
from remotemap.backends.remote_files import RemoteSetupError
from remotemap.errors import ConfigError
from tests.infra.sshd import SSHServer

pytestmark = pytest.mark.ssh

# The hosts have remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _options(server: SSHServer, python: Path | str, **more: Any) -> dict[str, Any]:
    return {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
            "python": str(python), "progress": False, **more}


def _home_python(server: SSHServer, python: Path) -> str:
    """``~/...`` naming the test user's venv python relative to that user's home."""
    return "~/" + str(python.relative_to(server.user.home))


def test_relative_remote_dir_that_climbs_out_is_refused_before_anything_is_made(
        sshd_host: SSHServer, remote_python: Path) -> None:
    before = set(Path("/tmp").iterdir())
    with pytest.raises(ConfigError) as info:
        remote_map(abs, [(1,)], mode="ssh", remote_dir="../../tmp",
                   **_options(sshd_host, remote_python))
    assert "ssh.remote_dir" in str(info.value) and "'../../tmp'" in str(info.value)
    made = [p for p in set(Path("/tmp").iterdir()) - before if p.name.startswith("run-")]
    assert made == []


def test_remote_dir_the_user_cannot_write_is_a_permission_error(
        sshd_host: SSHServer, remote_python: Path) -> None:
    with pytest.raises(RemoteSetupError) as info:
        remote_map(abs, [(1,)], mode="ssh", remote_dir="/",
                   **_options(sshd_host, remote_python))
    text = str(info.value)
    assert "permission denied" in text and f"user {sshd_host.user.name}" in text
    assert "/run-" in text and "ssh.remote_dir" in text
    assert "FileNotFoundError" not in text and "No such file" not in text


def test_python_under_the_remote_home_is_expanded_there(
        sshd_host: SSHServer, remote_python: Path) -> None:
    python = _home_python(sshd_host, remote_python)
    assert remote_map(abs, [(-3,)], mode="ssh", **_options(sshd_host, python)) == [3]


def test_status_check_expands_the_remote_home_in_python(
        sshd_host: SSHServer, remote_python: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[ssh]\nhosts = ["{sshd_host.alias}"]\nssh_config = "{sshd_host.ssh_config}"\n'
        f'python = "{_home_python(sshd_host, remote_python)}"\nconnect_timeout = 5.0\n')
    env = {**os.environ, "REMOTEMAP_CONFIG": str(config)}
    checked = subprocess.run([sys.executable, "-m", "remotemap", "status", "--check"], env=env,
                             capture_output=True, text=True, timeout=60)
    line = next(line for line in checked.stdout.splitlines() if sshd_host.alias in line)
    assert "ok: Python 3." in line, checked.stdout + checked.stderr
    assert "cannot run" not in checked.stdout


def _write_odd_names(x: int) -> int:
    Path(f"good-{x}.txt").write_text("good")
    if x == 0:
        with open(b"out-bad\xffname", "wb") as f:
            f.write(b"not utf-8")
        Path("out-new\nline").write_text("newline")
    return x


def test_fetch_of_odd_file_names_fails_that_file_only(
        sshd_host: SSHServer, remote_python: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    fetch_dir = tmp_path / "back"
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        got = remote_map(_write_odd_names, [(i,) for i in range(3)], mode="ssh",
                         fetch=["good-*", "out-*"], fetch_dir=str(fetch_dir), retries=0,
                         **_options(sshd_host, remote_python))
    assert got == [0, 1, 2]  # each task ran once and succeeded: no lost link
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("connection" in w and "lost" in w for w in warnings), warnings
    for i in range(3):
        assert (fetch_dir / str(i) / f"good-{i}.txt").read_text() == "good"
    # A name with a newline is a valid name: fetched as it is.
    assert (fetch_dir / "0" / "out-new\nline").read_text() == "newline"
    # A name that is not UTF-8 cannot travel over SFTP: skipped, named in a warning.
    assert any("cannot fetch" in w and "out-bad\\udcffname" in w for w in warnings), warnings
    assert sorted(p.name for p in (fetch_dir / "0").iterdir()) == ["good-0.txt",
                                                                    "out-new\nline"]
