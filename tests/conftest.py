"""Shared fixtures: an isolated config for every test, and the contract suite's backends."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

pytest_plugins = ["tests.backends", "tests.ssh_fixtures", "tests.isolated_fixtures",
                  "tests.slurm_fixtures", "tests.futures_support"]


# A shell starts a background job (`cmd &` without job control) with SIGINT ignored, and the
# programs the tests start inherit that: their Ctrl-C tests would then wait for a SIGINT they
# never see. Tests stand for a user at a terminal, where Ctrl-C is delivered.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# `kill PID` (a CI timeout, a user) ends pytest with SIGTERM, whose default action skips every
# fixture's teardown: the sshd, SLURM daemons and isolated hosts the session started would
# outlive it. As a KeyboardInterrupt it unwinds like Ctrl-C, which pytest answers by tearing
# down the session's fixtures. A child forked from this process (the local modes fork their
# first chunk) keeps SIGTERM's default meaning: whoever kills it expects it to end.
_PYTEST_PID = os.getpid()


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _PYTEST_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise KeyboardInterrupt(f"pytest got signal {signum}: tearing down what the tests started")


if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


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
