"""Which calls may share a warm ssh host (``ssh_warm.warm_key``), and ``keep_alive`` itself."""

from __future__ import annotations

from remotemap.backends.ssh_warm import keep_alive, warm_key
from remotemap.config.loader import load_config


def _settings(**options: object) -> dict[str, object]:
    return dict(load_config().settings_for("ssh", {"hosts": ["h"], **options}))


def test_what_only_the_caller_uses_does_not_stop_reuse() -> None:
    base = warm_key("h", _settings(), {})
    for options in ({"n_jobs": 4}, {"chunksize": 3}, {"keep_remote_files": True},
                    {"keep_alive": 5.0}, {"hosts": ["h", "other"]}, {"remote_dir": "/scratch"}):
        assert warm_key("h", _settings(**options), {}) == base, options


def test_the_host_the_connection_the_server_and_the_env_must_match() -> None:
    base = warm_key("h", _settings(), {})
    assert warm_key("other", _settings(), {}) != base
    for options in ({"user": "someone"}, {"port": 2222}, {"python": "/opt/py/bin/python"},
                    {"preload": False}, {"fetch": ["*.png"]}, {"key_file": "/k"},
                    {"host_key_policy": "accept-new"}):
        assert warm_key("h", _settings(**options), {}) != base, options
    assert warm_key("h", _settings(), {"OMP_NUM_THREADS": "1"}) != base


def test_keep_alive_defaults_to_what_loky_keeps_and_zero_turns_it_off() -> None:
    assert keep_alive(_settings()) == 300.0
    assert keep_alive(_settings(keep_alive=0)) == 0.0
