"""``remotemap runs plot`` and ``remotemap.timeline``: the page, as headless Chromium renders it,
holds one bar per task attempt on its worker's lane, failures red, retries and timeouts marked;
its PNG is a real picture; without Chromium the error says what to install."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from remotemap import RemoteException, remote_map
from remotemap.cli import main
from remotemap.cli.runs_plot import NoRenderer, chromium_command, find_chromium
from remotemap.tasks import ChunkResult
from remotemap.timeline import COLOURS, run_results, timeline_html
from tests import taskfuncs as tf

REQUIRE_ENV = "REMOTEMAP_REQUIRE_CHROMIUM"
RED = COLOURS["failed"]


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def chromium() -> str:
    try:
        return find_chromium()
    except NoRenderer as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{exc} ({REQUIRE_ENV}=1: required here)", pytrace=False)
        pytest.skip(str(exc))


class _Rects(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rects: list[dict[str, str]] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if tag == "rect":
            self.rects.append({k: v or "" for k, v in attrs})


def rendered_bars(chromium: str, page: Path) -> tuple[list[dict[str, str]], Counter[str]]:
    """The task bars of ``page`` in the DOM headless Chromium built from it, and its tags."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([*chromium_command(chromium, profile), "--dump-dom",
                               page.absolute().as_uri()],
                              capture_output=True, text=True, timeout=120, check=True)
    parser = _Rects()
    parser.feed(done.stdout)
    return [r for r in parser.rects if "task" in r.get("class", "").split()], parser.tags


def png_pixels(path: Path) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit RGB/RGBA PNG (what Chromium writes), filters undone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    step = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(idat), width * step, []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b, c = prev[i], prev[i - step] if i >= step else 0
            p = a + b - c
            pred = [0, a, b, (a + b) // 2,
                    a if abs(p - a) <= min(abs(p - b), abs(p - c)) else
                    (b if abs(p - b) <= abs(p - c) else c)][kind]
            line[i] = (line[i] + pred) & 0xFF
        rows += [tuple(line[i:i + 3]) for i in range(0, stride, step)]
        prev = line
    return rows  # type: ignore[return-value]


def _stored_run_with_retries(tmp_path: Path) -> Path:
    """Six tasks on local: task 1 fails once then succeeds, task 4 fails both attempts."""
    counters, run = tmp_path / "counters", tmp_path / "run"
    counters.mkdir()
    with pytest.raises(RemoteException):
        remote_map(tf.fail_until, [(str(counters), i) for i in range(6)],
                   [{"failures": {1: 1, 4: 5}.get(i, 0)} for i in range(6)], mode="local",
                   n_jobs=2, retries=1, backoff=0.01, run_dir=str(run), progress=False)
    return run


def test_runs_plot_draws_one_bar_per_attempt(chromium: str, tmp_path: Path) -> None:
    run = _stored_run_with_retries(tmp_path)
    page = tmp_path / "run.html"
    assert main(["runs", "plot", str(run), "-o", str(page)]) == 0
    bars, tags = rendered_bars(chromium, page)
    # 6 first attempts, and one retry each for tasks 1 and 4
    assert sorted(int(b["data-index"]) for b in bars) == [0, 1, 1, 2, 3, 4, 4, 5]
    red = sorted((int(b["data-index"]), int(b["data-attempt"])) for b in bars
                 if b["fill"] == RED)
    assert red == [(1, 1), (4, 1), (4, 2)]
    retries = sorted(int(b["data-index"]) for b in bars if "retry" in b["class"].split())
    assert retries == [1, 4]
    results = run_results(run)
    assert tags["script"] == 0
    # n_jobs=2, and a child forked for the first chunk while the pool starts, in turn.
    assert Counter(r.worker for r in results) and len({r.worker for r in results}) <= 3
    # one shaded chunk band per stored chunk result, its edge drawn
    assert tags["line"] >= len(results)
    png = tmp_path / "run.png"
    assert main(["runs", "plot", str(run), "-o", str(png)]) == 0
    pixels = png_pixels(png)
    assert len(set(pixels)) > 10  # not blank: text, bars, bands
    assert pixels.count((0xD6, 0x27, 0x28)) > 50  # the failed bars, red


def test_a_remote_exception_draws_its_timeouts_and_their_retries(chromium: str,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(tf.sleep_for, [(0,), (1,)], [{"seconds": 0.0}, {"seconds": 30.0}],
                   mode="local", n_jobs=2, timeout=1.0, retries=1, backoff=0.01,
                   progress=False)
    page = tmp_path / "failures.html"
    page.write_text(timeline_html(info.value))
    bars, _ = rendered_bars(chromium, page)
    assert [(b["data-index"], b["data-attempt"]) for b in bars] == [("1", "1"), ("1", "2")]
    assert all("timeout" in b["class"].split() and "hatch" in b["fill"] for b in bars)
    assert ["retry" in b["class"].split() for b in bars] == [False, True]


def test_the_page_fetches_nothing(tmp_path: Path) -> None:
    page = timeline_html(run_results(_stored_run_with_retries(tmp_path)))
    assert "default-src 'none'" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert page.count('class="task') == 8


def test_without_chromium_a_png_names_what_to_install(tmp_path: Path) -> None:
    run = tmp_path / "run"
    remote_map(tf.square, [(1,), (2,)], mode="serial", run_dir=str(run), progress=False)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no browser there
    done = subprocess.run([sys.executable, "-m", "remotemap", "runs", "plot", str(run), "-o",
                           str(tmp_path / "run.png")], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "apt-get install chromium" in done.stderr and "Chromium" in done.stderr
    assert not (tmp_path / "run.png").exists()


def test_runs_plot_refuses_an_unknown_run_and_format(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "plot", "no-such-run", "-o", str(tmp_path / "x.html")]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err
    run = tmp_path / "run"
    remote_map(tf.square, [(1,)], mode="serial", run_dir=str(run), progress=False)
    assert main(["runs", "plot", str(run), "-o", str(tmp_path / "x.pdf")]) == 1
    assert ".html or .png, not .pdf" in capsys.readouterr().err


def test_results_stored_without_times_are_counted_not_drawn() -> None:
    """A result pickled by a version that recorded no times: loaded, it lacks the fields."""
    old = ChunkResult(0, [0, 1], [0, 1])
    for name in ("timings", "worker", "ends", "marks", "starts"):
        del old.__dict__[name]
    page = timeline_html([pickle.loads(pickle.dumps(old))])
    assert page.count('class="task') == 0
    assert "2 attempt(s) without a recorded time are not drawn" in page


def test_workers_that_take_turns_share_a_row(tmp_path: Path) -> None:
    """local_with_dumps forks a process per task: 8 workers, but never more than 2 at once,
    so 2 rows (a row each would make the picture as tall as the run is long)."""
    run = tmp_path / "run"
    remote_map(tf.sleep_for, [(i,) for i in range(8)], [{"seconds": 0.05}] * 8,
               mode="local_with_dumps", n_jobs=2, run_dir=str(run), progress=False)
    results = run_results(run)
    assert len({r.worker for r in results}) == 8
    page = timeline_html(results)
    assert page.count('class="task') == 8
    assert 1 <= page.count('class="lane-label"') <= 2
    assert "in turn)" in page


def test_runs_plot_names_the_kind_of_a_run_it_cannot_draw(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from remotemap import Workflow

    wf = Workflow("analysis")
    wf.add_step(tf.square, 3)
    wf.run("serial", run_dir=tmp_path / "wf")
    [run_id] = [p.name for p in (tmp_path / "state" / "remotemap" / "workflows").iterdir()]
    assert main(["runs", "plot", run_id, "-o", str(tmp_path / "wf.html")]) == 1
    assert f"{run_id} is a workflow run" in capsys.readouterr().err
    assert not (tmp_path / "wf.html").exists()
