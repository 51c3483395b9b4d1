"""Workflows and their run directory: which stored steps are reused and which rerun (a changed
step, an edited function, a tampered value), a directory of another user refused, one run at a
time in a directory, a step that cannot be matched never reused.

The step functions and the fixture these tests share are in test_workflow.py.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap.errors import UnsafePath
from remotemap.workflow import (
    Result,
    Workflow,
)
from remotemap.workflow.store import RunDirectoryBusy
from tests.test_workflow import (
    calls,
    join_noted,
    note,
    state_home,  # noqa: F401  (autouse: workflow runs are indexed in a private state home)
)

# Step functions defined here travel by value, as test_workflow.py's do (a worker need not
# import the tests).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_a_changed_step_reruns_with_its_followers(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")

    def build(x: int) -> Workflow:
        wf = Workflow("changing")
        head = wf.add_step(note, log, "head", 0)
        changed = wf.add_step(note, log, "changed", x, prerequisites=[head])
        wf.add_step(join_noted, log, "after", Result(changed))
        wf.add_step(note, log, "other", prerequisites=[head])
        return wf

    build(1).run("serial", run_dir=tmp_path / "run")
    report = build(2).run("serial", run_dir=tmp_path / "run")
    assert [s.reused for s in report] == [True, False, False, True]
    assert report.value(3) == [2]
    assert Counter(calls(tmp_path / "calls")) == {"head": 1, "changed": 2, "after": 2, "other": 1}


def test_an_edited_step_function_reruns_with_the_steps_after_it(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    source = "def scaled(note, log, x):\n    return note(log, 'scaled', 2 * x)\n"

    def build(code: str) -> Workflow:
        steps = types.ModuleType("edited_steps")
        exec(code, steps.__dict__)
        wf = Workflow("edited")
        head = wf.add_step(note, log, "head", 5)
        scaled = wf.add_step(steps.scaled, note, log, Result(head))
        wf.add_step(join_noted, log, "after", Result(scaled))
        wf.add_step(note, log, "other", prerequisites=[head])
        return wf

    build(source).run("serial", run_dir=tmp_path / "run")
    report = build(source.replace("2 * x", "3 * x")).run("serial", run_dir=tmp_path / "run")
    assert [s.reused for s in report] == [True, False, False, True]
    assert report.value(3) == [15]  # not the 10 stored by the function before the edit
    assert Counter(calls(tmp_path / "calls")) == {"head": 1, "scaled": 2, "after": 2, "other": 1}


class _Planted:
    """A pickle someone put in a run directory: loading it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def test_a_tampered_step_value_is_not_unpickled_and_the_step_reruns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log, marker = str(tmp_path / "calls"), tmp_path / "pwned"

    def build() -> Workflow:
        wf = Workflow("tampered")
        first = wf.add_step(note, log, "first", 1)
        wf.add_step(join_noted, log, "second", Result(first))
        return wf

    assert build().run("serial", run_dir=tmp_path / "run").ok
    first_value = next((tmp_path / "run" / "steps").glob("note-*.pkl"))
    first_value.write_bytes(pickle.dumps(_Planted(marker)))
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        report = build().run("serial", run_dir=tmp_path / "run")
    assert not marker.exists()
    assert f"{first_value} failed its integrity check" in caplog.text
    # The first step runs again, and so the step after it.
    assert report.ok and [s.reused for s in report] == [False, False]
    assert calls(tmp_path / "calls") == ["first", "second", "first", "second"]


@pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user: root only")
def test_a_workflow_run_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    log, marker, run_dir = str(tmp_path / "calls"), tmp_path / "pwned", tmp_path / "theirs"
    wf = Workflow("foreign")
    wf.add_step(note, log, "only", 1)
    assert wf.run("serial", run_dir=run_dir).ok
    for path in (run_dir / "steps").iterdir():
        path.write_bytes(pickle.dumps(_Planted(marker)))
    for path in [run_dir, *run_dir.rglob("*")]:
        os.lchown(path, 65534, 65534)
    with pytest.raises(UnsafePath, match=rf"{run_dir} is owned by uid 65534"):
        wf.run("serial", run_dir=run_dir)
    assert not marker.exists()


def wait_for_file(path: str, limit: float = 60.0) -> str:
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


def test_one_run_directory_takes_one_run_at_a_time(tmp_path: Path) -> None:
    go, started = tmp_path / "go", tmp_path / "started"

    def build() -> Workflow:
        wf = Workflow("shared dir")
        wf.add_step(Path.touch, started)
        wf.add_step(wait_for_file, str(go))
        return wf

    first: list[Any] = []
    thread = threading.Thread(
        target=lambda: first.append(build().run("local", run_dir=tmp_path / "run")))
    thread.start()
    try:
        wait_for_file(str(started))
        with pytest.raises(RunDirectoryBusy, match=rf"{tmp_path / 'run'} is in use by "
                                                   rf"process {os.getpid()} on "):
            build().run("local", run_dir=tmp_path / "run")
    finally:
        go.touch()
        thread.join(60)
    assert first[0].ok
    again = build().run("local", run_dir=tmp_path / "run")  # free again once it ended
    assert again.ok and all(step.reused for step in again)


def test_a_step_with_unpicklable_arguments_runs_on_serial_and_is_never_reused(
        tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    lock = threading.Lock()  # no pickle takes it: the step cannot be matched on resume

    def build() -> Workflow:
        wf = Workflow("unpicklable")
        wf.add_step(note, log, "plain")
        wf.add_step(note, log, "locked", lock)
        return wf

    for _ in range(2):
        assert build().run("serial", run_dir=tmp_path / "run").ok
    assert Counter(calls(tmp_path / "calls")) == {"plain": 1, "locked": 2}
