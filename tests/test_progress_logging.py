"""The progress bar and the ``remotemap`` logger."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from remotemap import remote_map
from remotemap.progress import Progress
from tests import taskfuncs as tf


def test_progress_true_draws_a_bar_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert remote_map(tf.square, [(i,) for i in range(30)], mode="serial", progress=True) == [
        i * i for i in range(30)]
    text = err.getvalue()
    assert "30/30" in text and "serial" in text


def test_progress_false_and_non_terminal_default_print_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    remote_map(tf.square, [(i,) for i in range(30)], mode="serial", progress=False)
    remote_map(tf.square, [(i,) for i in range(30)], mode="serial")  # StringIO is no terminal
    assert err.getvalue() == ""


def test_progress_counts_every_task() -> None:
    bar = Progress(5, True, "x")
    bar.update(2)
    bar.update(3)
    assert bar._bar is not None and bar._bar.n == 5
    bar.close()
    assert bar._bar is None


def test_runs_are_logged_under_the_remotemap_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="remotemap"):
        remote_map(tf.square, [(1,), (2,)], mode="serial")
    messages = [r.getMessage() for r in caplog.records if r.name == "remotemap"]
    assert any("2 tasks on serial" in m for m in messages)
