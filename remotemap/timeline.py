"""A picture of a run: every task attempt as a bar on the lane of the worker that ran it.

Records in, text out: :func:`bars_from_results` (chunk results, e.g. a stored run's),
:func:`bars_from_failures` (a :class:`~remotemap.RemoteException`'s failures, each with its
earlier attempts) and :func:`render_html` (a self-contained page: inline SVG and CSS, no
script, nothing fetched). :func:`timeline_html` takes any of those sources, and
:func:`run_results` reads a stored run's results.

Times are the workers' own clocks (seconds since the epoch); hosts whose clocks disagree are
drawn shifted by that much. A task with no recorded time (a run stored by an older version) is
not drawn; the page says how many.
"""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from remotemap.errors import RemoteException, TaskFailure
from remotemap.tasks import ChunkResult

Status = Literal["ok", "failed", "timeout"]

#: Colours, one per status; failures are red.
COLOURS: dict[str, str] = {"ok": "#4c78a8", "failed": "#d62728", "timeout": "#d62728"}
_RETRY_STROKE = "#ff7f0e"
_LABEL_WIDTH, _PLOT_WIDTH, _LANE, _BAR, _TOP = 190, 1000, 24, 16, 96


@dataclass(frozen=True)
class Bar:
    """One attempt of one task."""

    index: int
    start: float
    end: float
    #: Who ran it: ``host:pid`` of the worker, else the host.
    lane: str
    #: Which chunk it ran in (numbered by arrival), None when unknown.
    chunk: int | None
    status: Status
    #: 1 for the first attempt, 2 for the first retry...
    attempt: int = 1
    #: What went wrong, for a failed attempt.
    error: str = ""


def _failure_bar(failure: TaskFailure, chunk: int | None, attempt: int) -> Bar | None:
    if failure.timing is None:
        return None
    status: Status = "timeout" if failure.kind == "timeout" else "failed"
    return Bar(failure.index, failure.timing[0], failure.timing[1],
               failure.worker or failure.host, chunk, status, attempt,
               f"{failure.exception_type}: {failure.message}")


def bars_from_results(results: Iterable[ChunkResult]) -> tuple[list[Bar], int]:
    """The bars of ``results`` in the order they came (a task seen again is a retry), and how
    many tasks had no time recorded."""
    bars: list[Bar] = []
    attempts: dict[int, int] = {}
    missing = 0
    for number, result in enumerate(results):
        times, worker = result.task_times(), getattr(result, "worker", "")  # older records
        for index in result.indices:
            timing = times.get(index)
            attempts[index] = attempt = attempts.get(index, 0) + 1
            if timing is None:
                missing += 1
                continue
            bars.append(Bar(index, timing[0], timing[1], worker or "?", number, "ok",
                            attempt))
        for failure in result.failures:
            attempts[failure.index] = attempt = attempts.get(failure.index, 0) + 1
            if failure.timing is None and failure.index in times:
                failure = _with_timing(failure, times[failure.index], worker)
            bar = _failure_bar(failure, number, attempt)
            missing += bar is None
            bars += [bar] if bar else []
    return bars, missing


def _with_timing(failure: TaskFailure, timing: tuple[float, float], worker: str
                 ) -> TaskFailure:
    return dataclasses.replace(failure, timing=timing, worker=failure.worker or worker)


def bars_from_failures(failures: Iterable[TaskFailure]) -> tuple[list[Bar], int]:
    """The bars of final failures and of their earlier attempts (``previous``)."""
    bars: list[Bar] = []
    missing = 0
    for failure in failures:
        for attempt, one in enumerate([*failure.previous, failure], start=1):
            bar = _failure_bar(one, None, attempt)
            missing += bar is None
            bars += [bar] if bar else []
    return bars, missing


def timeline_html(source: RemoteException | Iterable[ChunkResult] | Iterable[TaskFailure],
                  title: str = "remotemap run") -> str:
    """The page for a RemoteException (its failures and their earlier attempts), chunk
    results (every attempt; e.g. :func:`run_results`) or failures."""
    records = list(source.failures if isinstance(source, RemoteException) else source)
    if all(isinstance(r, TaskFailure) for r in records):
        bars, missing = bars_from_failures(r for r in records if isinstance(r, TaskFailure))
    else:
        bars, missing = bars_from_results(r for r in records if isinstance(r, ChunkResult))
    return render_html(bars, title, missing)


def run_results(run: str | os.PathLike[str]) -> list[ChunkResult]:
    """Every chunk result stored in run ``run`` (an id or a directory), in arrival order;
    ValueError, UnsafePath or TamperedFile when it cannot be read."""
    from remotemap.runs import RunStore

    store = RunStore.existing(RunStore.find(run))
    return [r["result"] for r in store.outcomes() if isinstance(r.get("result"), ChunkResult)]


# -- drawing ---------------------------------------------------------------------------------

_STYLE = (
    "body{font:13px sans-serif;margin:8px;background:#fff;color:#222}"
    "svg text{font:11px sans-serif}.lane-label{text-anchor:end}.axis{stroke:#888}"
    f".task{{stroke:#fff;stroke-width:0.5}}.retry{{stroke:{_RETRY_STROKE};stroke-width:2.5}}"
    ".chunk-even{fill:#e9eef5}.chunk-odd{fill:#c3cfdf}.chunk-edge{stroke:#333;stroke-width:1.5}")
_DEFS = ('<defs><pattern id="timeout-hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
         ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#d62728"/>'
         '<rect width="2.5" height="6" fill="#222"/></pattern></defs>')


def _fill(bar: Bar) -> str:
    return "url(#timeout-hatch)" if bar.status == "timeout" else COLOURS[bar.status]


def _tip(bar: Bar) -> str:
    chunk = "" if bar.chunk is None else f", chunk {bar.chunk}"
    again = f" (attempt {bar.attempt})" if bar.attempt > 1 else ""
    what = bar.status + (f": {bar.error}" if bar.error else "")
    return (f"task {bar.index}{again} on {bar.lane}{chunk}: {bar.end - bar.start:.3f} s, "
            f"{what}")


class _Scale:
    def __init__(self, bars: Sequence[Bar]) -> None:
        self.t0 = min((b.start for b in bars), default=0.0)
        self.span = max(max((b.end for b in bars), default=0.0) - self.t0, 1e-6)

    def x(self, t: float) -> float:
        return _LABEL_WIDTH + (t - self.t0) / self.span * _PLOT_WIDTH

    def width(self, start: float, end: float) -> float:
        return max(self.x(end) - self.x(start), 1.0)  # a tiny task stays visible


def _host(worker: str) -> str:
    name = worker.split("\0")[0]
    return name.rpartition(":")[0] if ":" in name else name


def _rows(bars: Sequence[Bar]) -> tuple[list[int], list[str]]:
    """Each bar's row, and each row's label: a row per worker, except that workers of one
    host that never run at once (a process per task, as local_with_dumps forks) take turns
    on a row, so the picture is as tall as the run was wide."""
    spans: dict[str, list[float]] = {}
    keys = []
    for i, bar in enumerate(bars):
        key = bar.lane if ":" in bar.lane else f"{bar.lane}\0{i}"  # no pid: alone
        keys.append(key)
        span = spans.setdefault(key, [bar.start, bar.end])
        span[0], span[1] = min(span[0], bar.start), max(span[1], bar.end)
    slots: list[tuple[str, list[float], list[str]]] = []  # host, [end], its workers
    row_of: dict[str, int] = {}
    for key, (start, end) in sorted(spans.items(), key=lambda kv: (_host(kv[0]), kv[1][0])):
        free = [r for r, (host, last, _) in enumerate(slots)
                if host == _host(key) and last[0] < start]
        row = free[0] if free else len(slots)
        if not free:
            slots.append((_host(key), [end], []))
        slots[row][1][0] = end
        slots[row][2].append(key)
        row_of[key] = row
    labels = [members[0].split("\0")[0] if len(members) == 1 else
              f"{host} ({len(members)} in turn)" for host, _, members in slots]
    return [row_of[key] for key in keys], labels


def _chunk_spans(bars: Sequence[Bar], rows: list[int], scale: _Scale) -> list[str]:
    """A shaded band behind the bars of each chunk, alternating shades along a row."""
    spans: dict[tuple[int, int], list[float]] = {}
    for bar, row in zip(bars, rows, strict=True):
        if bar.chunk is not None:
            span = spans.setdefault((row, bar.chunk), [bar.start, bar.end])
            span[0], span[1] = min(span[0], bar.start), max(span[1], bar.end)
    out, seen = [], dict.fromkeys(rows, 0)
    for (row, chunk), (start, end) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        parity = "odd" if seen[row] % 2 else "even"
        seen[row] += 1
        y, x = _TOP + row * _LANE + 1, scale.x(start)
        out.append(f'<rect class="chunk chunk-{parity}" data-chunk="{chunk}" x="{x:.2f}" '
                   f'y="{y}" width="{scale.width(start, end):.2f}" height="{_LANE - 2}">'
                   f"<title>chunk {chunk}</title></rect>"
                   f'<line class="chunk-edge" x1="{x:.2f}" y1="{y}" x2="{x:.2f}" '
                   f'y2="{y + _LANE - 2}"/>')
    return out


def _task_rects(bars: Sequence[Bar], rows: list[int], scale: _Scale) -> list[str]:
    out = []
    for bar, row in zip(bars, rows, strict=True):
        classes = f"task {bar.status}" + (" retry" if bar.attempt > 1 else "")
        y = _TOP + row * _LANE + (_LANE - _BAR) / 2
        out.append(f'<rect class="{classes}" data-index="{bar.index}" '
                   f'data-attempt="{bar.attempt}" fill="{_fill(bar)}" '
                   f'x="{scale.x(bar.start):.2f}" y="{y}" '
                   f'width="{scale.width(bar.start, bar.end):.2f}" height="{_BAR}">'
                   f"<title>{html.escape(_tip(bar))}</title></rect>")
    return out


def _axis(scale: _Scale, height: int) -> list[str]:
    out = [f'<line class="axis" x1="{_LABEL_WIDTH}" y1="{_TOP - 4}" '
           f'x2="{_LABEL_WIDTH + _PLOT_WIDTH}" y2="{_TOP - 4}"/>']
    for k in range(6):
        t = scale.span * k / 5
        x = _LABEL_WIDTH + _PLOT_WIDTH * k / 5
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{_TOP - 8}" x2="{x:.1f}" '
                   f'y2="{height}" stroke-dasharray="2 4"/>'
                   f'<text x="{x:.1f}" y="{_TOP - 12}" text-anchor="middle">{t:.3g} s</text>')
    return out


def _legend() -> str:
    items = [("ok", COLOURS["ok"], ""), ("failed", COLOURS["failed"], ""),
             ("timed out", "url(#timeout-hatch)", ""),
             ("retry (attempt 2+)", "#ffffff", ' class="retry"'),
             ("chunk (edge at its start)", "#c3cfdf", "")]
    out, x = [], _LABEL_WIDTH
    for label, fill, extra in items:
        out.append(f'<g class="legend"><rect{extra} x="{x}" y="40" width="14" height="12" '
                   f'fill="{fill}"/><text x="{x + 18}" y="50">{label}</text></g>')
        x += 28 + 6 * len(label)
    return "".join(out)


def render_html(bars: Sequence[Bar], title: str = "remotemap run", missing: int = 0) -> str:
    """The page: a row per worker (see :func:`_rows`), x = time, one rect (class ``task``)
    per attempt."""
    rows, names = _rows(bars)
    scale = _Scale(bars)
    height = _TOP + max(len(names), 1) * _LANE + 8
    failed = sum(b.status != "ok" for b in bars)
    summary = (f"{len({b.index for b in bars})} tasks, {len(bars)} attempts ({failed} failed), "
               f"{len({b.lane for b in bars})} workers, {scale.span:.3g} s")
    if missing:
        summary += f"; {missing} attempt(s) without a recorded time are not drawn"
    labels = [f'<text class="lane-label" x="{_LABEL_WIDTH - 6}" '
              f'y="{_TOP + i * _LANE + _LANE / 2 + 4}">{html.escape(name)}</text>'
              for i, name in enumerate(names)]
    svg = "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_LABEL_WIDTH + _PLOT_WIDTH + 10}" '
        f'height="{height}">', _DEFS,
        f'<text x="{_LABEL_WIDTH}" y="24" style="font-size:14px">{html.escape(summary)}</text>',
        _legend(), *_axis(scale, height), *labels, *_chunk_spans(bars, rows, scale),
        *_task_rects(bars, rows, scale), "</svg>"])
    # The policy forbids every fetch and script: the page is only what it holds.
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h3>{html.escape(title)}</h3>\n{svg}\n</body></html>\n")
