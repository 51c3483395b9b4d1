# ruff: noqa: F811
"""``remotemap config``: list keys edited as ``git config --add`` does, one exit status per
kind of failure across get, set and unset, and whole sections removed only on purpose.

Exit statuses (docs/cli.md): 2 for a name that is no key at all (a typo), 1 for a key that is
valid but not set (or a list that lacks the value to remove), 0 otherwise.
"""

from __future__ import annotations

from pathlib import Path

# The fixtures of test_cli.py (a subprocess `remotemap` with every config path in tmp_path),
# imported, so the test parameters naming them are not redefinitions.
from tests.test_cli import Run, home, run, write, xdg_file  # noqa: F401


def test_add_appends_once_and_keeps_comments(run: Run, xdg_file: Path) -> None:
    write(xdg_file, '# mine\n[ssh]\n# the hosts\nhosts = ["web1"]  # first\n')
    added = run("config", "set", "ssh.hosts", "--add", "web2")
    assert added.returncode == 0, added.stderr
    assert 'ssh.hosts = ["web1", "web2"]' in added.stdout
    assert xdg_file.read_text() == '# mine\n[ssh]\n# the hosts\nhosts = ["web1", "web2"]  # first\n'
    again = run("config", "set", "ssh.hosts", "--add", "web2")
    assert again.returncode == 0
    assert 'already contains "web2"' in again.stdout
    assert run("config", "get", "ssh.hosts").stdout == '["web1", "web2"]\n'


def test_add_to_a_key_not_in_the_file_starts_from_its_default(run: Run, xdg_file: Path) -> None:
    assert run("config", "set", "ssh.fetch", "--add", "*.log").returncode == 0
    assert run("config", "set", "ssh.fetch", "--add", "out/*").returncode == 0
    assert run("config", "get", "ssh.fetch").stdout == '["*.log", "out/*"]\n'


def test_remove_takes_the_value_out_or_fails_naming_it(run: Run, xdg_file: Path) -> None:
    write(xdg_file, '[ssh]\nhosts = ["web1", "web2", "web3"]\n')
    removed = run("config", "set", "ssh.hosts", "--remove", "web2")
    assert removed.returncode == 0, removed.stderr
    assert run("config", "get", "ssh.hosts").stdout == '["web1", "web3"]\n'
    before = xdg_file.read_bytes()
    absent = run("config", "set", "ssh.hosts", "--remove", "web9")
    assert absent.returncode == 1
    assert 'ssh.hosts does not contain "web9"' in absent.stderr
    assert '["web1", "web3"]' in absent.stderr
    assert xdg_file.read_bytes() == before


def test_add_and_remove_refused_on_a_key_that_is_no_list(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[ssh]\nn_jobs = 2\n")
    before = xdg_file.read_bytes()
    for flag in ("--add", "--remove"):
        refused = run("config", "set", "ssh.n_jobs", flag, "3")
        assert refused.returncode == 1
        assert "ssh.n_jobs is an integer key, not a list" in refused.stderr
    assert run("config", "set", "remotemap.mode", "--add", "x").stderr.count(
        "remotemap.mode is a string key") == 1
    assert xdg_file.read_bytes() == before
    both = run("config", "set", "ssh.hosts", "--add", "--remove", "x")
    assert both.returncode == 2


def test_unknown_key_exits_2_in_get_set_and_unset(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = 2\n")
    for words in (["get", "local.n_jbs"], ["set", "local.n_jbs", "3"], ["unset", "local.n_jbs"],
                  ["set", "local.n_jbs", "--add", "3"]):
        result = run("config", *words)
        assert result.returncode == 2, words
        assert "unknown key 'local.n_jbs'; valid keys in [local]: n_jobs, chunksize" \
            in result.stderr, words
        assert result.stderr.startswith(f"usage: remotemap config {words[0]}"), words
    assert xdg_file.read_text() == "[local]\nn_jobs = 2\n"


def test_key_not_set_exits_1_in_unset_while_get_gives_its_default(run: Run,
                                                                   xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = 2\n")
    unset = run("config", "unset", "local.chunksize")
    assert unset.returncode == 1
    assert f"local.chunksize is not set in {xdg_file}" in unset.stderr
    assert xdg_file.read_text() == "[local]\nn_jobs = 2\n"
    # get reads the effective value, and every declared key has one: its default
    got = run("config", "get", "local.chunksize")
    assert (got.returncode, got.stdout) == (0, "0\n")
    # a sub-key of a key that has none is no key at all
    assert run("config", "get", "ssh.hosts.web1").returncode == 2


def test_unset_a_section_needs_section(run: Run, xdg_file: Path) -> None:
    text = '[local]\nn_jobs = 2\n\n# my hosts\n[ssh]\nhosts = ["a"]  # one\n'
    write(xdg_file, text)
    refused = run("config", "unset", "ssh")
    assert refused.returncode == 2
    assert "'ssh' is a whole section" in refused.stderr and "--section" in refused.stderr
    assert xdg_file.read_text() == text
    key_as_section = run("config", "unset", "--section", "local.n_jobs")
    assert key_as_section.returncode == 2
    assert "'local.n_jobs' is a key" in key_as_section.stderr
    removed = run("config", "unset", "ssh", "--section")
    assert removed.returncode == 0, removed.stderr
    assert f"removed [ssh] from {xdg_file}" in removed.stdout
    assert "ssh" not in xdg_file.read_text() and "n_jobs = 2" in xdg_file.read_text()
    assert run("config", "unset", "--section", "ssh").returncode == 1  # not there any more
    typo = run("config", "unset", "--section", "shh")
    assert typo.returncode == 2
    assert "unknown section [shh]" in typo.stderr


def test_unset_section_repairs_an_unknown_section(run: Run, xdg_file: Path) -> None:
    write(xdg_file, "[local]\nn_jobs = 2\n[bogus]\nx = 1\n")
    assert run("config", "validate").returncode == 1
    assert run("config", "unset", "--section", "bogus").returncode == 0
    assert run("config", "validate").returncode == 0
