"""The ``remotemap`` command, run for real in subprocesses with every config path in tmp_path."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from remotemap._version import __version__
from remotemap.backends import backend_names
from remotemap.config.editing import example_text

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def xdg_file(tmp_path: Path) -> Path:
    """Where the config lives by default in these tests ($XDG_CONFIG_HOME)."""
    return tmp_path / "xdg" / "remotemap" / "config.toml"


@pytest.fixture
def run(tmp_path: Path, home: Path) -> Run:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REMOTEMAP_CONFIG", "VISUAL", "EDITOR", "XDG_CONFIG_HOME")
        }
        environ.update(HOME=str(home), XDG_CONFIG_HOME=str(tmp_path / "xdg"), **env)
        return subprocess.run(
            [sys.executable, "-m", "remotemap", *args],
            env=environ,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- basics --------------------------------------------------------------------------------


def test_version(run: Run) -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"remotemap {__version__}"


SUBCOMMANDS = [
    [],
    ["config"],
    *[["config", a] for a in ("path", "show", "get", "set", "unset", "edit", "init", "validate")],
    ["status"],
    ["demo"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "top")
def test_help_on_every_subcommand(run: Run, words: list[str]) -> None:
    result = run(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: remotemap {' '.join(words)}".rstrip())
    assert "--config" in result.stdout


def test_usage_errors_exit_2(run: Run) -> None:
    assert run().returncode == 2
    assert run("config").returncode == 2
    bad_key = run("config", "get", "local.nope")
    assert bad_key.returncode == 2
    assert "valid keys in [local]: n_jobs, chunksize" in bad_key.stderr
    assert run("no-such-command").returncode == 2


def test_console_script_is_the_same_entry_point() -> None:
    script = Path(sys.executable).parent / "remotemap"
    if not script.exists():
        pytest.skip("package not installed with its console script")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"remotemap {__version__}"


# --- config path / show / get ----------------------------------------------------------------


def test_config_path_reports_where_it_came_from(run: Run, tmp_path: Path, xdg_file: Path) -> None:
    result = run("config", "path")
    assert result.stdout.startswith(str(xdg_file))
    assert "$XDG_CONFIG_HOME" in result.stdout
    assert "does not exist" in result.stdout

    env_file = write(tmp_path / "env.toml", "")
    result = run("config", "path", REMOTEMAP_CONFIG=str(env_file))
    assert result.stdout.startswith(str(env_file))
    assert "$REMOTEMAP_CONFIG" in result.stdout
    assert "; exists" in result.stdout

    arg = tmp_path / "arg.toml"
    # --config wins over the environment, before or after the subcommand.
    before = ("--config", str(arg), "config", "path")
    after = ("config", "path", "--config", str(arg))
    for args in (before, after):
        result = run(*args, "--bare", REMOTEMAP_CONFIG=str(env_file))
        assert result.stdout == f"{arg}\n"


def test_config_show_prints_values_and_origins(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = 3\n")
    result = run("config", "show")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    n_jobs = next(line for line in lines if line.startswith("n_jobs = 3"))
    assert n_jobs.endswith(f"# {xdg_file}")
    assert any(line.startswith("chunksize = 0") and line.endswith("# default") for line in lines)
    assert 'mode = "local"' in result.stdout
    for section in ("[remotemap]", "[local]", "[local_with_dumps]"):
        assert section in lines


def test_config_get(run: Run, xdg_file: Path) -> None:
    write(xdg_file, '[remotemap]\nmode = "serial"\n[local_with_dumps]\nkeep_files = true\n')
    assert run("config", "get", "remotemap.mode").stdout == "serial\n"
    assert run("config", "get", "local_with_dumps.keep_files").stdout == "true\n"
    assert run("config", "get", "local.n_jobs").stdout == "0\n"


def test_invalid_file_makes_show_and_get_fail(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = true\n")
    for args in (("config", "show"), ("config", "get", "local.chunksize")):
        result = run(*args)
        assert result.returncode == 1
        assert "local.n_jobs: expected integer, found boolean true" in result.stderr


# --- config set / unset --------------------------------------------------------------------


def test_set_keeps_comments_and_reads_back(run: Run, xdg_file: Path) -> None:
    assert run("config", "init").returncode == 0
    result = run("config", "set", "local.n_jobs", "4")
    assert result.returncode == 0, result.stderr
    text = xdg_file.read_text()
    assert "# Worker processes. 0 or -1 = every CPU this process may use" in text
    assert "# remotemap configuration" in text
    assert "\nn_jobs = 4\n" in text
    assert run("config", "get", "local.n_jobs").stdout == "4\n"
    assert run("config", "set", "remotemap.mode", '"serial"').returncode == 0
    assert run("config", "get", "remotemap.mode").stdout == "serial\n"
    # Setting the key again replaces the value rather than adding a second line.
    assert run("config", "set", "local.n_jobs", "-2").returncode == 0
    assert xdg_file.read_text().count("\nn_jobs = ") == 1
    assert run("config", "get", "local.n_jobs").stdout == "-2\n"


def test_set_refuses_invalid_values_and_leaves_the_file_alone(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "# mine\n[local]\nn_jobs = 2  # two\n")
    before = xdg_file.read_bytes()
    for value, message in [
        ("abc", 'expected integer, found string "abc"'),
        ("true", "expected integer, found boolean true"),
        ("[1, 2]", "expected integer, found array"),
    ]:
        result = run("config", "set", "local.n_jobs", value)
        assert result.returncode == 1
        assert message in result.stderr
        assert str(xdg_file) in result.stderr
        assert xdg_file.read_bytes() == before
    result = run("config", "set", "remotemap.mode", "fast")
    assert result.returncode == 1
    assert "valid values" in result.stderr
    assert xdg_file.read_bytes() == before
    # No temp file left behind (the lock file beside it stays, by design).
    assert sorted(p.name for p in xdg_file.parent.iterdir()) == ["config.toml", "config.toml.lock"]


def test_set_string_key_takes_the_text_as_is(run: Run, xdg_file: Path) -> None:
    assert run("config", "set", "local_with_dumps.temp_dir", "2024").returncode == 0
    assert run("config", "get", "local_with_dumps.temp_dir").stdout == "2024\n"


def test_set_creates_a_missing_file(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "dir" / "config.toml"
    result = run("config", "set", "local.chunksize", "8", REMOTEMAP_CONFIG=str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "[local]\nchunksize = 8\n"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert (target.parent.stat().st_mode & 0o777) == 0o700


def test_unset(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\n# keep me\nn_jobs = 5\nchunksize = 2\n")
    result = run("config", "unset", "local.n_jobs")
    assert result.returncode == 0, result.stderr
    assert "removed local.n_jobs" in result.stdout
    assert xdg_file.read_text() == "[local]\n# keep me\nchunksize = 2\n"
    assert run("config", "get", "local.n_jobs").stdout == "0\n"
    again = run("config", "unset", "local.n_jobs")
    assert again.returncode == 1  # as `git config --unset`: not set is a failure
    assert "local.n_jobs is not set" in again.stderr


def test_unset_removes_an_unknown_key_to_fix_the_file(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_job = 5\n")
    assert run("config", "validate").returncode == 1
    assert run("config", "unset", "local.n_job").returncode == 0
    assert run("config", "validate").returncode == 0


# --- config init / validate / edit ---------------------------------------------------------


def test_init_and_force(run: Run, xdg_file: Path) -> None:
    result = run("config", "init")
    assert result.returncode == 0, result.stderr
    assert xdg_file.read_text() == example_text()
    xdg_file.write_text("[local]\nn_jobs = 1\n")
    refused = run("config", "init")
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert xdg_file.read_text() == "[local]\nn_jobs = 1\n"
    assert run("config", "init", "--force").returncode == 0
    assert xdg_file.read_text() == example_text()


def test_validate_exit_codes(run: Run, xdg_file: Path, tmp_path: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = 2\n")
    valid = run("config", "validate")
    assert valid.returncode == 0
    assert "valid" in valid.stdout

    write(xdg_file, "[local]\nn_jobs = 2\n[bogus]\n")
    invalid = run("config", "validate")
    assert invalid.returncode == 1
    assert f"{xdg_file}: unknown section [bogus]" in invalid.stderr

    write(xdg_file, "[local]\nn_jobs = \n")
    syntax = run("config", "validate")
    assert syntax.returncode == 1
    assert "line 2" in syntax.stderr

    missing = run("config", "validate", "--config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def editor(text: str) -> str:
    """An $EDITOR that appends ``text`` to the file it is given."""
    script = "printf %s " + shlex.quote(text) + ' >> "$1"'
    return "sh -c " + shlex.quote(script) + " sh"


def test_edit_valid(run: Run, xdg_file: Path) -> None:
    # A missing file is created from the example before the editor opens it.
    result = run("config", "edit", EDITOR=editor("\n# edited\n"))
    assert result.returncode == 0, result.stderr
    assert xdg_file.read_text() == example_text() + "\n# edited\n"

    write(xdg_file, "[local]\nn_jobs = 1\n")
    result = run("config", "edit", EDITOR=editor("[local_with_dumps]\nkeep_files = true\n"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert run("config", "get", "local_with_dumps.keep_files").stdout == "true\n"


def test_edit_invalid_reports_and_fails(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = 1\n")
    result = run("config", "edit", EDITOR=editor("[bogus]\n"))
    assert result.returncode == 1
    assert "unknown section [bogus]" in result.stderr
    # VISUAL wins over EDITOR.
    result = run("config", "edit", VISUAL=editor("oops = \n"), EDITOR="false")
    assert result.returncode == 1
    assert "syntax error" in result.stderr


def test_edit_with_a_failing_editor(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\n")
    result = run("config", "edit", EDITOR="false")
    assert result.returncode == 1
    assert "status 1" in result.stderr


# --- status and demo -----------------------------------------------------------------------


def test_status_valid(run: Run, xdg_file: Path) -> None:
    write(xdg_file, '[remotemap]\nmode = "serial"\n')
    result = run("status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"config file: {xdg_file}" in result.stdout
    assert "$XDG_CONFIG_HOME" in result.stdout
    assert "valid:     yes" in result.stdout
    assert f"default mode: serial  (from {xdg_file})" in result.stdout
    for name in backend_names():
        assert any(
            line.split()[:1] == [name] and ("available" in line)
            for line in result.stdout.splitlines()
        ), name


def test_status_invalid_still_reports_the_rest(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nchunksize = -4\n")
    result = run("status")
    assert result.returncode == 1
    assert "valid:     NO" in result.stdout
    assert "local.chunksize: -4 is too small" in result.stdout
    assert "default mode: local" in result.stdout
    assert all(name in result.stdout for name in backend_names())


def test_status_without_a_file(run: Run) -> None:
    result = run("status")
    assert result.returncode == 0
    assert "exists:    no" in result.stdout


@pytest.mark.parametrize("mode", ["serial", "local"])
def test_demo(run: Run, xdg_file: Path, mode: str) -> None:
    write(xdg_file, f'[remotemap]\nmode = "{mode}"\n')
    result = run("demo", "-n", "10")
    assert result.returncode == 0, result.stderr
    assert f"mode: {mode}" in result.stdout
    assert "(sum 285)" in result.stdout
    assert "elapsed:" in result.stdout


def test_demo_mode_option_and_bad_count(run: Run) -> None:
    result = run("demo", "--mode", "serial", "-n", "3")
    assert result.returncode == 0, result.stderr
    assert "mode: serial  (from --mode)" in result.stdout
    assert "[0, 1, 4]" in result.stdout
    assert run("demo", "-n", "0").returncode == 2
    assert run("demo", "--mode", "nope").returncode == 2
