"""The progress display as a user at a terminal sees it, read from a real pseudo-terminal."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.terminal import Terminal, render

# Task i waits for the file GATE.i, so the test decides when each task ends.
GATED_RUN = """
import os, sys, time
from remotemap import remote_map

gate, mode = sys.argv[1:3]

def task(i):
    open(f"{gate}.running", "w").close()
    while not os.path.exists(f"{gate}.{i}"):
        time.sleep(0.01)
    return i

# local: one chunk of the four tasks, so the bar can only move per task if the worker says so.
options = {"n_jobs": 1, "chunksize": 4} if mode == "local" else {}
assert remote_map(task, [(i,) for i in range(4)], mode=mode, **options) == [0, 1, 2, 3]
"""

# What the run's output path does with lines tasks print: Progress.write, between updates.
WRITES = """
import os, sys, time
from remotemap.progress import Progress

with Progress(3, None, "serial") as bar:
    bar.update(1)
    bar.write("task 0 said hello")
    bar.write("task 1 complained", stderr=True)
    bar.update(1)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    bar.update(1)
"""

BAR = r"^{mode}: +\d+%\|.*\| {done}/{total} \[\d\d:\d\d<"


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.close()


@pytest.mark.parametrize("mode", ["serial", "local"])
def test_the_bar_shows_at_zero_advances_per_task_and_leaves_a_summary(
        mode: str, tmp_path: Path, terminals: list[Terminal]) -> None:
    gate = tmp_path / "gate"
    terminal = Terminal(GATED_RUN, str(gate), mode)
    terminals.append(terminal)
    # No task can have finished: none of their files exists yet.
    screen = terminal.wait_for(BAR.format(mode=mode, done=0, total=4))
    assert len(screen) == 1, screen
    Path(f"{gate}.0").touch()
    screen = terminal.wait_for(BAR.format(mode=mode, done=1, total=4))
    assert len(screen) == 1, screen  # redrawn in place, not one line per state
    for i in (1, 2, 3):
        Path(f"{gate}.{i}").touch()
    screen = terminal.finish()
    assert len(screen) == 1 and re.fullmatch(
        rf"remotemap {mode}: 4 tasks in \d+\.\d s, 0 failed", screen[0]), screen


def test_ctrl_c_leaves_a_summary_that_says_interrupted(tmp_path: Path,
                                                      terminals: list[Terminal]) -> None:
    gate = tmp_path / "gate"
    terminal = Terminal(GATED_RUN, str(gate), "serial")
    terminals.append(terminal)
    terminal.wait_for(BAR.format(mode="serial", done=0, total=4))
    deadline = time.monotonic() + 30
    while not Path(f"{gate}.running").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # Ctrl-C while the first task runs
    terminal.process.send_signal(signal.SIGINT)
    terminal.process.wait(timeout=30)
    screen = terminal.wait_for(r"KeyboardInterrupt")
    assert re.fullmatch(r"remotemap serial: 0 of 4 tasks in \d+\.\d s, 0 failed, interrupted",
                        screen[0]), screen
    assert screen[1].startswith("Traceback"), screen


def test_lines_written_during_a_run_go_above_the_bar(tmp_path: Path,
                                                     terminals: list[Terminal]) -> None:
    gate = tmp_path / "gate"
    terminal = Terminal(WRITES, str(gate))
    terminals.append(terminal)
    screen = terminal.wait_for(BAR.format(mode="serial", done=2, total=3))
    assert screen[:2] == ["task 0 said hello", "task 1 complained"]
    assert len(screen) == 3 and re.match(BAR.format(mode="serial", done=2, total=3), screen[2])
    gate.touch()
    screen = terminal.finish()
    assert screen[:2] == ["task 0 said hello", "task 1 complained"]
    assert len(screen) == 3 and re.fullmatch(
        r"remotemap serial: 3 tasks in \d+\.\d s, 0 failed", screen[2]), screen


def test_the_screen_model_replays_what_a_bar_writes() -> None:
    # The model the tests above read the screen with: \r rewrites, \n moves down, ESC[A up.
    assert render("a: 1/2\rb: 2/2\n") == ["b: 2/2"]
    assert render("bar\r   \rtext\r\nbar") == ["text", "bar"]
    assert render("ab\ncd") == ["ab", "  cd"]  # a bare line feed keeps the column
    assert render("one\r\ntwo\x1b[A\rz\x1b[K") == ["z", "two"]
