"""What a task prints is never lost: captured on every mode, kept on its failure and in stored
runs, shown during the run prefixed ``[task N] `` (above the bar), or not at all when asked."""

from __future__ import annotations

import concurrent.futures
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import tests.taskfuncs as tf
from remotemap import ModeName, RemoteException, remote_map
from remotemap.capture import HEAD, TAIL
from remotemap.cli import main
from remotemap.future_errors import failure_of
from remotemap.runs import RunStore
from tests.backends import Runner

LINES = 20


def _printed(x: int, stream: str) -> list[str]:
    return [f"{stream} {x}.{k}" for k in range(LINES)]


def _interleaved(x: int) -> list[str]:
    return [line for pair in zip(_printed(x, "out"), _printed(x, "err"), strict=True)
            for line in pair]


def test_every_line_is_kept_on_the_failure_and_streamed_with_its_task(
        runner: Runner, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.chatty, [(i, LINES, i == 1) for i in range(3)])
    out, err = capfd.readouterr()
    for i in range(3):
        for line in _printed(i, "out"):
            assert out.count(f"[task {i}] {line}\n") == 1, (line, out)
            assert line not in err
        for line in _printed(i, "err"):
            assert err.count(f"[task {i}] {line}\n") == 1, (line, err)
            assert line not in out
    # Shown once, with the prefix only (local used to let workers print straight through).
    assert out.count(" out 0.0") == 1 and err.count(" err 2.0") == 1
    failure = info.value.failures[0]
    assert failure.index == 1
    assert failure.output.splitlines() == _interleaved(1)
    assert "output of the task (last 5 of 40 lines" in str(info.value)
    assert "| err 1.19" in str(info.value)


# Not on the cluster: stream_output is the driver's, applied to every mode's results alike, and
# the cluster's own part (outputs read with the outcomes, kept on the failure) is proven by
# test_every_line_is_kept_on_the_failure_and_streamed_with_its_task. A SLURM round, ~6 s.
@pytest.mark.not_on_modes("cluster")
def test_stream_output_false_keeps_it_captured_only(
        runner: Runner, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RemoteException) as info:
        runner.map(tf.chatty, [(i, LINES, i == 0) for i in range(2)], stream_output=False)
    out, err = capfd.readouterr()
    assert "out 1." not in out + err and "err 0." not in out + err
    assert info.value.failures[0].output.splitlines() == _interleaved(0)


def test_executor_streams_before_the_future_resolves(
        runner: Runner, capfd: pytest.CaptureFixture[str]) -> None:
    with runner.executor() as executor:
        assert executor.submit(tf.chatty, 4, 2).result(timeout=120) == 4
        out, err = capfd.readouterr()
        assert "[task 0] out 4.0\n[task 0] out 4.1\n" in out
        assert "[task 0] err 4.1\n" in err
        failing = executor.submit(tf.chatty, 5, 1, True)
        exc = failing.exception(timeout=120)
    assert exc is not None
    failure = failure_of(exc)
    assert failure is not None and failure.output == "out 5.0\nerr 5.0\n"


def test_retries_keep_each_attempts_output(tmp_path: Path) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(tf.print_attempt, [(str(tmp_path), 0, 5)], mode="local", retries=2,
                   backoff=0, stream_output=False)
    failure = info.value.failures[0]
    assert failure.attempts == 3
    assert failure.output == "task 0 attempt 3\n"
    assert [p.output for p in failure.previous] == ["task 0 attempt 1\n", "task 0 attempt 2\n"]


@pytest.mark.parametrize("mode", ["serial", "local"])
def test_output_is_bounded_to_its_head_and_tail(mode: str) -> None:
    n = 10_000  # 12 characters a line: 120,000 in all, more than HEAD + TAIL
    with pytest.raises(RemoteException) as info:
        remote_map(tf.print_lines_then_fail, [(0, n)], mode=ModeName(mode), stream_output=False)
    output = info.value.failures[0].output
    every = "".join(f"line {k:06d}\n" for k in range(n))
    cut = len(every) - HEAD - TAIL
    assert output.startswith(every[:HEAD]) and output.endswith(every[-TAIL:])
    marker = output[HEAD:len(output) - TAIL]
    assert f"[remotemap: {cut} characters of this task's output cut here" in marker
    assert len(marker) < 200


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
def test_a_timed_out_task_keeps_what_it_printed(mode: str) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(tf.print_then_sleep, [(0, 30)], mode=ModeName(mode), timeout=1,
                   stream_output=False)
    failure = info.value.failures[0]
    assert failure.kind == "timeout"
    assert "task 0 started" in failure.output


def test_threads_each_keep_their_own_output(capsys: pytest.CaptureFixture[str]) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool, \
            pytest.raises(RemoteException) as info:
        remote_map(tf.chatty, [(i, 200, True) for i in range(4)], executor=pool,
                   stream_output=False)
    assert [f.output for f in info.value.failures] == [
        "".join(f"out {i}.{k}\nerr {i}.{k}\n" for k in range(200)) for i in range(4)]
    print("after the run")  # the streams are this process's own again
    assert capsys.readouterr().out == "after the run\n"
    assert type(sys.stdout).__name__ != "_Router"


def test_serial_shows_lines_at_once_and_finishes_unended_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    def parts(x: int) -> int:
        sys.stdout.write("abc")
        sys.stdout.write("def\nghi")
        print("late", file=sys.stderr)
        return x

    assert remote_map(parts, [(3,)], mode="serial") == [3]
    out, err = capsys.readouterr()
    assert out == "[task 0] abcdef\n[task 0] ghi\n"
    assert err == "[task 0] late\n"


def test_config_turns_streaming_off(isolated_config: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = isolated_config / "remotemap" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[remotemap]\nstream_output = false\n")
    assert remote_map(tf.chatty, [(0, 2)], mode="serial") == [0]
    assert capsys.readouterr().out == ""
    assert remote_map(tf.chatty, [(0, 2)], mode="serial", stream_output=True) == [0]
    assert "[task 0] out 0.1" in capsys.readouterr().out


def test_a_stored_run_keeps_outputs_across_a_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    counters, run_dir = tmp_path / "counters", tmp_path / "run"
    counters.mkdir()
    largs = [(str(counters), i, 1 if i == 1 else 0) for i in range(3)]
    with pytest.raises(RemoteException):
        remote_map(tf.print_attempt, largs, mode="local", run_dir=run_dir, stream_output=False)
    stored = RunStore.existing(run_dir).load()
    assert stored.outputs == {i: f"task {i} attempt 1\n" for i in range(3)}
    assert stored.failures[1].output == "task 1 attempt 1\n"

    assert remote_map(tf.print_attempt, largs, mode="local", resume=run_dir,
                      stream_output=False) == [1, 2, 1]
    stored = RunStore.existing(run_dir).load()
    assert stored.outputs == {0: "task 0 attempt 1\n", 1: "task 1 attempt 2\n",
                              2: "task 2 attempt 1\n"}
    capsys.readouterr()
    assert main(["runs", "output", str(run_dir)]) == 0
    assert capsys.readouterr().out == ("=== task 0 (ok) ===\ntask 0 attempt 1\n"
                                       "=== task 1 (ok) ===\ntask 1 attempt 2\n"
                                       "=== task 2 (ok) ===\ntask 2 attempt 1\n")
    assert main(["runs", "output", str(run_dir), "--task", "1"]) == 0
    assert capsys.readouterr().out == "task 1 attempt 2\n"
    assert main(["runs", "output", str(run_dir), "--task", "7"]) == 1
    assert "there is no task 7" in capsys.readouterr().err


_BAR_SCRIPT = """
import time
from remotemap import remote_map

def subject(i):
    time.sleep(0.03)
    print(f"processing subject {i}")
    time.sleep(0.03)
    return i

remote_map(subject, [(i,) for i in range(12)], mode="serial", progress=True)
"""


def _on_a_terminal(tmp_path: Path, script: str) -> str:
    """What ``script`` writes on stdout and stderr, both a terminal (a pty), as bytes read."""
    path = tmp_path / "bar.py"
    path.write_text(script)
    controller, terminal = os.openpty()
    # A terminal of 24 x 100 (a new pty has none, and tqdm then draws nothing).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        process = subprocess.Popen([sys.executable, str(path)], stdin=subprocess.DEVNULL,
                                   stdout=terminal, stderr=terminal, env=env)
    finally:
        os.close(terminal)
    chunks = []
    try:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the program ended and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(controller)
        assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_serial_prints_above_the_bar_on_a_terminal(tmp_path: Path) -> None:
    raw = _on_a_terminal(tmp_path, _BAR_SCRIPT)
    assert "12/12" in raw  # the bar was drawn
    for i in range(12):
        line = f"[task {i}] processing subject {i}\r\n"
        at = raw.find(line)
        assert at > 0, (i, raw)
        # On a line of its own: the bar was cleared (carriage return) before it was written.
        assert raw[at - 1] in "\r\n", repr(raw[max(0, at - 80):at + len(line)])
    assert "processing subject" not in raw.replace("] processing subject", "")
    # The bar is never followed by printed text on its line (was: "9.95task/s]processing").
    assert re.search(r"task/s\][^\r\n]", raw) is None, raw


def test_in_one_chunk_each_task_gets_only_what_it_printed() -> None:
    largs = [(0, 2, True), (1, 0, True), (2, 1, False), (3, 0, True), (4, 1, True)]
    with pytest.raises(RemoteException) as info:
        remote_map(tf.chatty, largs, mode="local", n_jobs=1, chunksize=5, stream_output=False)
    assert {f.index: f.output for f in info.value.failures} == {
        0: "out 0.0\nerr 0.0\nout 0.1\nerr 0.1\n", 1: "", 3: "", 4: "out 4.0\nerr 4.0\n"}


def test_stream_output_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="stream_output must be True or False, got 'yes'"):
        remote_map(tf.chatty, [(0, 1)], mode="serial", stream_output="yes")  # type: ignore[call-overload]
