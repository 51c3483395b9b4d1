"""Shared fixtures: an isolated config for every test, and the contract suite's backends."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.backends", "tests.ssh_fixtures", "tests.isolated_fixtures",
                  "tests.slurm_fixtures", "tests.futures_support"]


# A shell starts a background job (`cmd &` without job control) with SIGINT ignored, and the
# programs the tests start inherit that: their Ctrl-C tests would then wait for a SIGINT they
# never see. Tests stand for a user at a terminal, where Ctrl-C is delivered.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test reads or writes the real ~/.config: each sees an empty XDG config home."""
    home = tmp_path_factory.mktemp("xdg-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("REMOTEMAP_CONFIG", raising=False)
    yield home


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``run_last`` go to the end of the session, in their order: each waits for
    something an earlier test started (a job SLURM kills at its walltime, a minute or more),
    so the wait passes while every other test runs instead of adding to the suite's time."""
    last = [item for item in items if item.get_closest_marker("run_last")]
    items[:] = [item for item in items if not item.get_closest_marker("run_last")] + last
