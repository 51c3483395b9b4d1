"""The config system: where the file is found, what it may hold, and how errors read."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remotemap.config import Config, config_path, load_config, resolve_n_jobs
from remotemap.config.editing import atomic_write, parse_cli_value, set_value
from remotemap.config.schema import Key, check_value
from remotemap.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every config location into tmp_path, so the real ~/.config is never read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("REMOTEMAP_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def mode_file(path: Path, mode: str) -> Path:
    return write(path, f'[remotemap]\nmode = "{mode}"\n')


# --- where the file is -------------------------------------------------------------------


def test_precedence_argument_env_xdg_default(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = mode_file(isolated_env / ".config" / "remotemap" / "config.toml", "serial")
    assert config_path() == (default, "default")
    assert load_config().get("remotemap.mode") == "serial"

    xdg = mode_file(tmp_path / "xdg" / "remotemap" / "config.toml", "local_with_dumps")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == (xdg, "$XDG_CONFIG_HOME")
    assert load_config().get("remotemap.mode") == "local_with_dumps"

    env = mode_file(tmp_path / "env.toml", "local")
    monkeypatch.setenv("REMOTEMAP_CONFIG", str(env))
    config = load_config()
    assert (config.path, config.source) == (env, "$REMOTEMAP_CONFIG")
    assert config.get("remotemap.mode") == "local"

    arg = mode_file(tmp_path / "arg.toml", "serial")
    config = load_config(arg)
    assert (config.path, config.source, config.exists) == (arg, "argument", True)
    assert config.get("remotemap.mode") == "serial"


def test_empty_env_and_relative_xdg_are_ignored(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMOTEMAP_CONFIG", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert config_path() == (isolated_env / ".config/remotemap/config.toml", "default")


def test_missing_default_file_means_defaults(isolated_env: Path) -> None:
    config = load_config()
    assert not config.exists
    assert config.section("local") == {"n_jobs": 0, "chunksize": 0, "send": [],
                                       "keep_staged": False}
    assert config.section("local_with_dumps") == {"n_jobs": 0, "keep_files": False, "temp_dir": "",
                                                  "preload": True, "send": [],
                                                  "keep_staged": False}
    assert config.get("remotemap.mode") == "local"
    assert config.origin("local.n_jobs") == "default"
    assert not (isolated_env / ".config").exists()


def test_explicit_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="argument") as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    assert info.value.path == missing

    monkeypatch.setenv("REMOTEMAP_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=re.escape("$REMOTEMAP_CONFIG")) as info:
        load_config()
    assert str(missing) in str(info.value)


def test_directory_instead_of_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


# --- validation ----------------------------------------------------------------------------

INVALID = [
    # (file content, texts the error must contain)
    ("[bogus]\nx = 1\n", ["[bogus]", "valid sections: remotemap, local, local_with_dumps"]),
    ("[local]\nn_job = 2\n", ["'local.n_job'", "valid keys in [local]: n_jobs, chunksize"]),
    ('[local]\nn_jobs = "4"\n', ["local.n_jobs", "expected integer", 'found string "4"']),
    ("[local]\nn_jobs = true\n", ["local.n_jobs", "expected integer", "found boolean true"]),
    ("[local]\nn_jobs = 2.5\n", ["local.n_jobs", "expected integer", "found float 2.5"]),
    (
        "[local_with_dumps]\nkeep_files = 1\n",
        ["local_with_dumps.keep_files", "expected boolean", "found integer 1"],
    ),
    (
        '[local_with_dumps]\ntemp_dir = ["a"]\n',
        ["local_with_dumps.temp_dir", "expected string", 'found array ["a"]'],
    ),
    (
        '[remotemap]\nmode = "fast"\n',
        ["remotemap.mode", '"fast"', 'valid values: "serial", "local", "local_with_dumps"'],
    ),
    ("[local]\nchunksize = -1\n", ["local.chunksize", "minimum is 0"]),
    ('mode = "local"\n', ["'mode'", "[remotemap]", "valid sections"]),
    ("local = 3\n", ["local", "expected a table", "found integer 3"]),
]


@pytest.mark.parametrize(("content", "expected"), INVALID)
def test_validation_errors_name_file_key_and_what_is_valid(
    tmp_path: Path, content: str, expected: list[str]
) -> None:
    path = write(tmp_path / "config.toml", content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for text in expected:
        assert text in message
    assert info.value.path == path


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[local]\nchunk_size = 2\n")
    with pytest.raises(ConfigError, match="did you mean 'chunksize'"):
        load_config(path)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[local]\nn_jobs = 2\nchunksize = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)


def test_syntax_error_at_end_of_document_still_names_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[local]\nn_jobs = [1,\n")
    with pytest.raises(ConfigError, match=r"line 2"):
        load_config(path)


def test_values_from_the_file_and_their_origins(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """\
        [local]
        n_jobs = -2
        [local_with_dumps]
        keep_files = true
        temp_dir = "~/runs"
        """,
    )
    config = load_config(path)
    assert config.get("local.n_jobs") == -2
    assert config.origin("local.n_jobs") == str(path)
    assert config.origin("local.chunksize") == "default"
    assert config.get("local_with_dumps.keep_files") is True
    # "~" is expanded in path keys, against $HOME (the fixture's).
    assert config.get("local_with_dumps.temp_dir") == os.path.expanduser("~/runs")
    assert not config.get("local_with_dumps.temp_dir").startswith("~")
    # section() hands out copies: changing one must not change the config.
    config.section("local")["n_jobs"] = 99
    assert config.get("local.n_jobs") == -2


def test_unknown_names_in_lookups_are_config_errors() -> None:
    config = Config(Path("x.toml"), "argument", exists=False)
    with pytest.raises(ConfigError, match=re.escape("valid keys in [local]: n_jobs, chunksize")):
        config.get("local.nope")
    with pytest.raises(ConfigError, match="valid sections"):
        config.section("sshh")
    with pytest.raises(ConfigError, match="is a section"):
        config.origin("local")


# --- per-call overrides ------------------------------------------------------------------


def test_settings_for_merges_and_checks_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.toml", "[local]\nchunksize = 5\n"))
    staging = {"send": [], "keep_staged": False}  # the data staging keys' defaults
    assert config.settings_for("local", {"n_jobs": 4}) == {"n_jobs": 4, "chunksize": 5,
                                                          **staging}
    assert config.settings_for("local", {}) == {"n_jobs": 0, "chunksize": 5, **staging}
    dumps = config.settings_for("local_with_dumps", {"temp_dir": tmp_path, "keep_files": True})
    assert dumps["temp_dir"] == str(tmp_path)
    assert dumps["keep_files"] is True

    with pytest.raises(TypeError, match="'n_job'") as info:
        config.settings_for("local", {"n_job": 4})
    assert "valid options: n_jobs, chunksize" in str(info.value)
    with pytest.raises(TypeError, match="expects integer"):
        config.settings_for("local", {"n_jobs": True})
    with pytest.raises(TypeError, match="expects boolean"):
        config.settings_for("local_with_dumps", {"keep_files": "yes"})
    with pytest.raises(ValueError, match="minimum is 0"):
        config.settings_for("local", {"chunksize": -3})


def test_settings_for_a_mode_without_a_section() -> None:
    config = Config(Path("x.toml"), "default", exists=False)
    assert config.settings_for("serial", {}) == {}
    with pytest.raises(TypeError, match="takes no options"):
        config.settings_for("serial", {"bogus": 2})
    # Another mode's option is ignored, with a warning (tests/test_hints.py).
    with pytest.warns(UserWarning, match="ignores"):
        assert config.settings_for("serial", {"n_jobs": 2}) == {}


# --- n_jobs --------------------------------------------------------------------------------


def test_resolve_n_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    from remotemap.config import SHARED_BY_ENV, loader

    monkeypatch.setattr(loader, "_loky_cpus", lambda affinity: 32)
    monkeypatch.setenv(SHARED_BY_ENV, "4")  # in a task of one of 4 workers: "all" is 8
    assert [resolve_n_jobs(n) for n in (0, -1, -2, -8, -50, 1, 3, 32)] == [
        8,
        8,
        7,
        1,
        1,
        1,
        3,
        32,
    ]
    with pytest.raises(TypeError):
        resolve_n_jobs(True)


def test_resolve_n_jobs_uses_the_real_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from loky import cpu_count

    from remotemap.config import SHARED_BY_ENV, shared_by

    monkeypatch.delenv(SHARED_BY_ENV, raising=False)
    n = resolve_n_jobs(0)
    assert n == max(1, cpu_count()) and n <= (os.cpu_count() or 1)
    monkeypatch.setenv(SHARED_BY_ENV, "lots")  # not a count: the machine's
    assert resolve_n_jobs(0) == n
    monkeypatch.setenv(SHARED_BY_ENV, "2")  # nested: a worker of 2, starting 3 of its own
    assert shared_by(3) == "6" and resolve_n_jobs(0) == max(1, n // 2)


# --- extension points: kinds not used by today's sections ---------------------------------


def test_list_float_and_table_kinds() -> None:
    hosts = Key(
        "hosts",
        "table",
        {},
        "per-host settings",
        fields=(Key("user", "str", "", "login"), Key("port", "int", 22, "port", minimum=1)),
    )
    assert check_value(hosts, "ssh.hosts", {"a": {"user": "bob"}}) == {
        "a": {"user": "bob", "port": 22}
    }
    with pytest.raises(ConfigError, match=re.escape("valid keys in [ssh.hosts.a]: user, port")):
        check_value(hosts, "ssh.hosts", {"a": {"usr": "bob"}})
    with pytest.raises(ConfigError, match=re.escape("ssh.hosts.a.port: expected integer")):
        check_value(hosts, "ssh.hosts", {"a": {"port": "22"}})
    with pytest.raises(ConfigError, match=re.escape("ssh.hosts.a: expected table")):
        check_value(hosts, "ssh.hosts", {"a": 3})

    names = Key("names", "list[str]", [], "host names")
    assert check_value(names, "ssh.names", ["a", "b"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="expected array of strings"):
        check_value(names, "ssh.names", ["a", 1])

    timeout = Key("timeout", "float", 1.0, "seconds")
    assert check_value(timeout, "ssh.timeout", 3) == 3.0
    assert isinstance(check_value(timeout, "ssh.timeout", 3), float)
    with pytest.raises(ConfigError, match="expected float"):
        check_value(timeout, "ssh.timeout", False)


# --- no side effects, and careful writes ---------------------------------------------------


def test_import_and_load_create_no_file(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    home, xdg = sandbox / "h", sandbox / "x"
    home.mkdir(parents=True)
    xdg.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    env.pop("REMOTEMAP_CONFIG", None)
    code = "import remotemap.config as c; c.load_config(); import remotemap.config.editing"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=sandbox)
    assert list(home.iterdir()) == []
    assert list(xdg.iterdir()) == []
    assert sorted(p.name for p in sandbox.iterdir()) == ["h", "x"]


def test_parse_cli_value() -> None:
    def plain(raw: str) -> object:
        value = parse_cli_value(raw)
        return value.unwrap() if hasattr(value, "unwrap") else value

    assert plain("4") == 4
    assert plain("true") is True
    assert plain('"x y"') == "x y"
    assert plain('["a", "b"]') == ["a", "b"]
    assert plain("serial") == "serial"
    assert plain("1\nother = 2") == "1\nother = 2"


def test_atomic_write_keeps_mode_and_follows_symlinks(tmp_path: Path) -> None:
    real = write(tmp_path / "real.toml", "[local]\n")
    real.chmod(0o640)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    atomic_write(link, "[local]\nn_jobs = 1\n")
    assert link.is_symlink()
    assert real.read_text() == "[local]\nn_jobs = 1\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_set_value_creates_private_file_and_dirs(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "config.toml"
    assert set_value(path, "local_with_dumps.temp_dir", "2024") == "2024"
    assert load_config(path).get("local_with_dumps.temp_dir") == "2024"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_table_keys_load_show_and_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An [ssh]-like section slots in by declaration alone: load, origins and set/unset."""
    from remotemap.config import schema
    from remotemap.config.editing import unset_value

    ssh = schema.Section(
        "ssh",
        "test-only",
        (
            Key("names", "list[str]", [], "hosts"),
            Key(
                "hosts",
                "table",
                {},
                "per host",
                fields=(Key("user", "str", "", "login"), Key("port", "int", 22, "port")),
            ),
        ),
    )
    monkeypatch.setitem(schema.SCHEMA, "ssh", ssh)
    path = tmp_path / "c.toml"
    set_value(path, "ssh.names", '["a", "b"]')
    assert set_value(path, "ssh.hosts.web1.user", "123") == "123"  # a str field keeps text
    set_value(path, "ssh.hosts.web1.port", "2222")
    assert "[ssh.hosts.web1]" in path.read_text()
    config = load_config(path)
    assert config.get("ssh.names") == ["a", "b"]
    assert config.get("ssh.hosts") == {"web1": {"user": "123", "port": 2222}}
    assert config.origin("ssh.hosts.web1.port") == str(path)
    assert ("ssh.hosts.web1.port", 2222, str(path)) in list(config.entries())
    with pytest.raises(ConfigError, match=re.escape("valid keys in each [ssh.hosts.NAME]")):
        set_value(path, "ssh.hosts.web1.usr", "x")
    assert unset_value(path, "ssh.hosts.web1.port")
    assert load_config(path).get("ssh.hosts.web1.port") == 22
    assert load_config(path).origin("ssh.hosts.web1.port") == "default"
