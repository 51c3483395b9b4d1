"""A tuned worker server (``tune SLOTS INLINE``, what the ``ssh`` mode sends): it holds the
chunks beyond its slots and starts each the moment a slot frees, sends small outcomes right
after their ``done`` line, and writes the chunks ``put`` on its stdin. Driven directly, as
``tests/test_worker.py`` does."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from remotemap.protocol import chunk_name, encode_chunk, open_outcome, seal_parts
from remotemap.server_client import WorkerServer
from remotemap.tasks import Chunk
from remotemap.worker_stdin import StdinReader
from tests import taskfuncs as tf
from tests.test_worker import KEY, _layout_with, _serve


def _client(proc: subprocess.Popen[bytes]) -> WorkerServer:
    """The caller's side of ``proc``, reading inline outcomes off its stdout."""
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout

    def read_exact(size: int) -> bytes:
        return out.read(size)

    server = WorkerServer(proc.stdin, out, read_exact=read_exact)
    server.wait_ready()
    return server


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), path


def _finish(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_a_held_chunk_starts_when_the_slot_frees_and_its_timeout_counts_from_then(
        tmp_path: Path) -> None:
    stem = str(tmp_path / "pid")
    # Chunk 1 waits 1.5 s behind chunk 0 with a 1 s timeout: counted from its "run" line it
    # would be killed; counted from its start, its 0.05 s sleep ends well within it.
    layout = _layout_with(tmp_path, tf.pid_and_sleep, [Chunk(0, [0], [(stem, 0, 1.5)], [{}]),
                                                       Chunk(1, [1], [(stem, 1, 0.05)], [{}])])
    proc = _serve(layout)
    server = _client(proc)
    server.tune(1, 1 << 16)
    server.run(0)
    server.run(1, 1.0)
    _wait_for(Path(f"{stem}.0"))
    assert not Path(f"{stem}.1").exists()  # held: one slot, taken
    assert server.next_done() == (0, "exit:0")
    assert server.next_done() == (1, "exit:0")
    for chunk_id in (0, 1):  # inline, sealed: checked as the file would be, and the same bytes
        sent = server.outcomes.pop(chunk_id)
        assert sent == Path(layout.outcome(chunk_id)).read_bytes()
        result = open_outcome(KEY, chunk_id, sent, "tok", "inline")
        assert result is not None and result.values == [chunk_id]
    _finish(proc)


def test_a_crashed_chunk_frees_its_slot_for_the_held_one_and_says_how_it_died(
        tmp_path: Path) -> None:
    layout = _layout_with(tmp_path, tf.crash_on, [Chunk(0, [3], [(3,)], [{}]),
                                                  Chunk(1, [4], [(4,)], [{}])])
    proc = _serve(layout)
    server = _client(proc)
    server.tune(1, 1 << 16)
    server.run(0)
    server.run(1)
    assert server.next_done() == (0, "exit:3")
    assert server.next_done() == (1, "exit:0")
    assert 0 not in server.outcomes  # no outcome to send for a crash: the caller reads the log
    result = open_outcome(KEY, 1, server.outcomes.pop(1), "tok", "inline")
    assert result is not None and result.values == [4]
    _finish(proc)


def test_an_outcome_larger_than_inline_is_left_to_download(tmp_path: Path) -> None:
    layout = _layout_with(tmp_path, tf.square, [Chunk(0, [0], [(7,)], [{}])])
    proc = _serve(layout)
    server = _client(proc)
    server.tune(2, 16)  # below any sealed outcome's size
    server.run(0)
    assert server.next_done() == (0, "exit:0")
    assert server.outcomes == {}
    result = open_outcome(KEY, 0, Path(layout.outcome(0)).read_bytes(), "tok", "file")
    assert result is not None and result.values == [49]
    _finish(proc)


def test_held_chunks_never_start_once_stdin_closes(tmp_path: Path) -> None:
    stem = str(tmp_path / "pid")
    layout = _layout_with(tmp_path, tf.pid_and_sleep, [Chunk(0, [0], [(stem, 0, 30)], [{}]),
                                                       Chunk(1, [1], [(stem, 1, 0)], [{}])])
    proc = _serve(layout)
    server = _client(proc)
    server.tune(1, 1 << 16)
    server.run(0)
    server.run(1)
    _wait_for(Path(f"{stem}.0"))
    _finish(proc)  # the running child is stopped; the held one must not start in its place
    assert not Path(f"{stem}.1").exists()


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def test_a_held_chunks_child_waits_forked_and_if_killed_is_reported_not_restarted(
        tmp_path: Path) -> None:
    stem = str(tmp_path / "pid")
    layout = _layout_with(tmp_path, tf.pid_and_sleep, [Chunk(0, [0], [(stem, 0, 1.0)], [{}]),
                                                       Chunk(1, [1], [(stem, 1, 0)], [{}]),
                                                       Chunk(2, [2], [(stem, 2, 0)], [{}])])
    proc = _serve(layout)
    server = _client(proc)
    server.tune(1, 1 << 16)
    for chunk_id in (0, 1, 2):
        server.run(chunk_id)
    _wait_for(Path(f"{stem}.0"))
    running = int(Path(f"{stem}.0").read_text())
    deadline = time.monotonic() + 10
    while len(_children_of(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    standby = sorted(_children_of(proc.pid) - {running})
    assert len(standby) == 2  # both held chunks' children, forked before any slot freed
    os.kill(standby[0], signal.SIGKILL)  # chunk 1's, the first forked
    assert server.next_done() == (1, "signal:9")
    assert server.next_done() == (0, "exit:0")
    assert server.next_done() == (2, "exit:0")
    assert not Path(f"{stem}.1").exists()  # never started, in its own child or another
    assert Path(f"{stem}.2").exists()
    _finish(proc)


def test_a_chunk_put_on_stdin_is_written_sealed_and_runs(tmp_path: Path) -> None:
    layout = _layout_with(tmp_path, tf.square, [])
    chunk = Chunk(5, [5], [(9,)], [{}])
    name = chunk_name(chunk.id)
    sealed = seal_parts(KEY, name, encode_chunk("tok", chunk))
    proc = _serve(layout)
    server = _client(proc)
    server.tune(1, 1 << 16)
    server.put(chunk.id, sealed)
    server.run(chunk.id)
    assert server.next_done() == (5, "exit:0")
    assert Path(layout.chunk(5)).read_bytes() == b"".join(sealed)
    result = open_outcome(KEY, 5, server.outcomes.pop(5), "tok", "inline")
    assert result is not None and result.values == [81]
    _finish(proc)


def test_stdin_is_cut_into_lines_and_put_payloads_however_it_arrives() -> None:
    stream = b"tune 2 0\nput 3 5\nab\ncdrun 3\nput ../x 2\n"
    for cut in range(len(stream) + 1):  # every place one read may end and the next begin
        reader = StdinReader()
        got = [*reader.feed(stream[:cut]), *reader.feed(stream[cut:])]
        assert got == [("tune 2 0", None), ("put 3 5", b"ab\ncd"), ("run 3", None),
                       ("put ../x 2", None)]  # not a chunk's number: an unknown command
