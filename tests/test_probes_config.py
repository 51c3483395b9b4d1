"""Probed config bugs: non-finite or absurd numbers, and permission errors from the CLI."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import remotemap
from remotemap import remote_map
from remotemap.cli import main

REPO = Path(remotemap.__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    code = main(["config", "validate", "--config", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[ssh]\nconnect_timeout = nan", "ssh.connect_timeout: nan is not a finite number"),
        ("[ssh]\nconnect_timeout = inf", "ssh.connect_timeout: inf is not a finite number"),
        ("[cluster]\npoll_interval = -inf", "cluster.poll_interval: -inf is not a finite"),
        ("[ssh]\nn_jobs = 99999999999999999999", "ssh.n_jobs: 99999999999999999999 is too "
         "large; the maximum is 4096"),
        ("[local]\nn_jobs = 4097", "local.n_jobs: 4097 is too large; the maximum is 4096"),
        ("[ssh]\nport = 65536", "ssh.port: 65536 is too large; the maximum is 65535"),
        ("[ssh]\nchunksize = 2147483648", "ssh.chunksize: 2147483648 is too large"),
    ],
)
def test_config_validate_rejects_non_finite_and_absurd_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    code, err = _validate(tmp_path, line + "\n", capsys)
    assert code == 1
    assert expected in err
    assert str(tmp_path / "config.toml") in err  # the file is named with the key
    assert "Traceback" not in err


def test_config_validate_accepts_the_largest_allowed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "[local]\nn_jobs = 4096\n[ssh]\nport = 65535\nconnect_timeout = 1e9\n"
    code, err = _validate(tmp_path, text, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"mode": "ssh", "connect_timeout": float("nan")}, "ssh.connect_timeout: nan is not"),
        ({"mode": "ssh", "connect_timeout": float("inf")}, "ssh.connect_timeout: inf is not"),
        ({"mode": "local", "n_jobs": 10**20}, "local.n_jobs: 100000000000000000000 is too"),
    ],
)
def test_per_call_options_reject_non_finite_and_absurd_numbers(
    options: dict[str, object], expected: str
) -> None:
    with pytest.raises(ValueError, match="option") as info:
        remote_map(abs, [(1,)], **options)  # type: ignore[call-overload]
    assert expected in str(info.value)


# --- permission errors, as an unprivileged user (root bypasses permission bits) ---------


def _unprivileged_prefix() -> list[str]:
    """How to run a command as a user the permission bits apply to; skip when there is none."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv is missing: cannot drop privileges")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _python_for(prefix: list[str]) -> tuple[str, dict[str, str]]:
    """A Python the unprivileged user can run with this checkout importable.

    This interpreter lives under /root (unreadable to nobody): Debian's Python of the same
    minor version runs this checkout and the venv's pure-Python dependencies instead."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
    if not prefix:
        return sys.executable, env
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0 or probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip(f"{SYSTEM_PYTHON} is missing or not Python {sys.version_info[:2]}")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *site.getsitepackages()])
    return SYSTEM_PYTHON, env


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="remotemap-perm-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def _cli_as_unprivileged(shared: Path, *args: str) -> subprocess.CompletedProcess[str]:
    prefix = _unprivileged_prefix()
    python, env = _python_for(prefix)
    env["XDG_CONFIG_HOME"] = str(shared / "xdg")
    return subprocess.run([*prefix, python, "-m", "remotemap", *args], capture_output=True,
                          text=True, env=env, cwd="/", timeout=60, check=False)


def test_config_in_a_directory_that_cannot_be_entered(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir()
    (locked / "config.toml").write_text("[ssh]\nn_jobs = 2\n")
    locked.chmod(0o700 if os.geteuid() == 0 else 0o000)
    done = _cli_as_unprivileged(shared_dir, "config", "validate", "--config",
                                str(locked / "config.toml"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot enter directory {locked} (no search (x) permission)" in done.stderr
    assert str(locked / "config.toml") in done.stderr


def test_config_set_in_a_directory_that_cannot_be_written(shared_dir: Path) -> None:
    readonly = shared_dir / "readonly"
    readonly.mkdir(mode=0o755)
    if os.geteuid() != 0:
        readonly.chmod(0o555)
    target = readonly / "new" / "config.toml"
    done = _cli_as_unprivileged(shared_dir, "config", "set", "ssh.n_jobs", "3", "--config",
                                str(target))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{readonly / 'new'}: permission denied" in done.stderr
    assert f"cannot create it in {readonly} (no write (w) permission" in done.stderr
    assert not (readonly / "new").exists()


def test_example_config_names_every_builtin_mode() -> None:
    """docs/config.md is checked by test_config_docs; the packaged example's comment too."""
    from remotemap.config.modes import BUILTIN_MODES

    text = (REPO / "remotemap" / "config" / "example.toml").read_text(encoding="utf-8")
    comment = text.split("[remotemap]", 1)[1].split("# mode =", 1)[0]
    missing = [name for name in BUILTIN_MODES if f'"{name}"' not in comment]
    assert not missing, f"example.toml's remotemap.mode comment lacks {missing}"
