"""The progress bar and the ``remotemap`` logger."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, remote_map
from remotemap.errors import TaskFailure
from remotemap.progress import ChunkWatch, Progress, TaskCounter
from remotemap.tasks import ChunkResult
from tests import taskfuncs as tf

SUMMARY = re.compile(r"^remotemap serial: (.*) in \d+\.\d s, (.*)$")


def run_with_bar(monkeypatch: pytest.MonkeyPatch, func: Callable[..., Any],
                 largs: list[tuple[Any, ...]], **options: Any) -> tuple[str, str]:
    """Run with ``progress=True`` on a captured stderr: (all it got, its summary's figures)."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with contextlib.suppress(RemoteException):
        remote_map(func, largs, mode="serial", progress=True, **options)
    text = err.getvalue()
    last = text.split("\r")[-1]
    assert last.endswith("\n") and last.count("\n") == 1, text  # one line, after the bar
    found = SUMMARY.match(last.rstrip("\n"))
    assert found is not None, last
    return text, f"{found[1]}, {found[2]}"


def test_progress_true_draws_the_bar_at_zero_then_leaves_a_summary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text, summary = run_with_bar(monkeypatch, tf.square, [(i,) for i in range(30)])
    assert text.startswith("\rserial:   0%") and "0/30" in text
    assert summary == "30 tasks, 0 failed"


def test_the_summary_counts_failures_and_retries(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    # Task 1 fails once then succeeds (a retry); task 3 fails both attempts (final).
    largs = [(str(tmp_path), i, {1: 1, 3: 2}.get(i, 0)) for i in range(5)]
    _, summary = run_with_bar(monkeypatch, tf.fail_until, largs, retries=1, backoff=0)
    assert summary == "5 tasks, 1 failed, 2 retried"


def test_a_run_stopped_at_its_first_failure_says_how_far_it_got(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, summary = run_with_bar(monkeypatch, tf.fail_on, [(i, (1,)) for i in range(6)],
                              on_error="stop")
    assert summary == "2 of 6 tasks, 1 failed, stopped"


def test_a_resumed_run_says_how_many_results_it_kept(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    largs = [(i, (2,)) for i in range(4)]
    run_with_bar(monkeypatch, tf.fail_on, largs, run_dir=tmp_path / "run")
    _, summary = run_with_bar(monkeypatch, tf.fail_on, largs, run_dir=tmp_path / "run")
    assert summary == "4 tasks, 1 failed (3 kept from an earlier run)"


def test_progress_false_and_non_terminal_default_print_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    remote_map(tf.square, [(i,) for i in range(30)], mode="serial", progress=False)
    remote_map(tf.square, [(i,) for i in range(30)], mode="serial")  # StringIO is no terminal
    assert err.getvalue() == ""


def test_the_status_goes_after_the_bar_with_the_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress(5, True, "cluster") as bar:
        bar.set_status("pending: Resources")
        assert err.getvalue().split("\r")[-1].rstrip().endswith(", pending: Resources]")
        bar.update(2, failed=1)
        bar.set_status("")
        assert err.getvalue().split("\r")[-1].rstrip().endswith(", 1 failed]")
    assert re.search(r"\rremotemap cluster: 2 of 5 tasks in \d+\.\d s, 1 failed, stopped\n\Z",
                     err.getvalue())
    Progress(5, False, "x").set_status("no bar: nothing to do")
    assert err.getvalue().count("remotemap") == 1


def test_runs_are_logged_under_the_remotemap_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="remotemap"):
        remote_map(tf.square, [(1,), (2,)], mode="serial")
    messages = [r.getMessage() for r in caplog.records if r.name == "remotemap"]
    assert any("2 tasks on serial" in m for m in messages)


def test_a_worker_counts_its_running_chunk_and_stops_when_it_ends() -> None:
    # The two halves of local's per-task count, in one process: the caller's counter file and
    # the worker's watch over the result run_chunk fills.
    counter = TaskCounter(2)
    watch = ChunkWatch()
    try:
        slot = counter.take()
        assert slot is not None
        result = ChunkResult(0)
        started = watch.watch((counter.path, slot))
        assert started is not None
        started(result)
        result.values += [0, 1]  # run_chunk grows values per task (indices at the end)
        result.failures.append(TaskFailure(2, "ValueError", "bad", ""))
        deadline = time.monotonic() + 10
        while counter.running() != 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter.running() == 3
        watch.unwatch()
        counter.release(slot)
        result.values.append(3)  # after its end, the chunk is no longer written
        time.sleep(0.3)
        assert counter.running() == 0
    finally:
        counter.close()
    assert counter.running() == 0 and not Path(counter.path).exists()
