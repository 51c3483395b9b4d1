"""What each task prints: captured where it runs, bounded, kept with its result, shown later.

:class:`Buffer` is set up once per chunk (by ``execution.run_chunk``, on every mode). It makes
``sys.stdout`` and ``sys.stderr`` routers: what a thread running a chunk writes goes to that
chunk's :class:`Buffer`; what any other thread writes goes where it went before. Per task the
cost is nil: the writing task is found when it writes (:class:`Buffer`); only a task that
printed pays for joining and storing its text (``ChunkResult.outputs``, ``stderr_spans``).

What is caught is what Python code writes through ``sys.stdout``/``sys.stderr`` (``print``,
``logging`` handlers made during the task, ``warnings``). Output written to the file
descriptors themselves (a C extension, a subprocess) is not split per task: in the worker
processes of ``local_with_dumps``, ``ssh`` and ``cluster`` it goes to the chunk's log
(``RUN/logs/CHUNK.log``), whose tail a crashed or timed-out task gets as its output; there
Python's output is also written to that log (:func:`keep_in_log`), so a task killed half-way
still leaves what it printed.

Each task keeps at most :data:`HEAD` characters from the start of its output and :data:`TAIL`
from the end, with one line saying how much was cut between them, so a task printing without
end cannot fill the worker's memory, the result pickle or a stored run.

Standard library only: every worker (remote hosts included) imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from remotemap.tasks import ChunkResult

#: Characters kept from the start of one task's output.
HEAD = 10_000
#: Characters kept from the end of one task's output.
TAIL = 40_000
#: The prefix of every line of a task's output shown during a run.
PREFIX = "[task {index}] "

_lock = threading.Lock()
#: Thread ident -> the buffer of the chunk that thread is running.
_buffers: dict[int, Buffer] = {}
_routers: tuple[_Router, _Router] | None = None
_users = 0
#: Also write what tasks print to the process's own stdout/stderr (a worker's chunk log).
_passthrough = False


def keep_in_log() -> None:
    """In a worker process whose stdout and stderr are a log: keep writing what tasks print
    there too, so a task killed before its outcome leaves its prints in the log."""
    global _passthrough
    _passthrough = True


class _Router:
    """Stands for ``sys.stdout`` or ``sys.stderr``: a capturing thread's writes go to its
    buffer, every other thread's to the stream it replaced (which answers everything else)."""

    def __init__(self, original: Any, stderr: bool) -> None:
        self.original = original
        self.stderr = stderr

    def write(self, text: str) -> int:
        buffer = _buffers.get(threading.get_ident())
        if buffer is None:
            return self.original.write(text) if self.original is not None else len(text)
        buffer.add(text, self.stderr)
        if _passthrough and self.original is not None:
            self.original.write(text)
            if "\n" in text:  # line by line, so a task killed later leaves its lines
                self.original.flush()
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.original is not None:
            self.original.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty...: the stream's
        return getattr(self.original, name)


class Buffer:
    """What the tasks of one chunk print, each task's bounded, moved into the chunk's result.

    The task that writes is found when it writes (the first of the chunk's tasks not yet in
    its result), and its text is moved into the result when another task writes or the chunk
    ends: a task that prints nothing costs nothing here.
    """

    # Class-level defaults, so a chunk whose tasks print nothing sets only three attributes
    # (serial sets a buffer up for every task).
    size = 0  # characters in parts
    limit = HEAD + 2 * TAIL  # trim parts beyond this many characters
    head: list[tuple[bool, str]] | None = None  # the first HEAD, once cut from parts
    cut = 0
    indices: Sequence[int] = ()
    result: ChunkResult | None = None
    task = -1  # whose output parts hold (-1: nobody's)
    outer: Buffer | None = None  # a task running a serial remote_map of its own

    def __init__(self, echo: Printer | None = None) -> None:
        self.parts: list[tuple[bool, str]] = []  # (written on stderr, text), in order
        self.echo = echo
        self.ident = threading.get_ident()

    def __enter__(self) -> Buffer:
        """Capture what this thread prints until the block ends. One object and no more
        calls than needed: ``serial`` sets one up for every task."""
        global _routers, _users
        with _lock:
            if _users == 0:
                routers = _routers
                if routers is None or routers[0].original is not sys.stdout \
                        or routers[1].original is not sys.stderr:
                    routers = _routers = (_Router(sys.stdout, False), _Router(sys.stderr, True))
                sys.stdout, sys.stderr = routers
            _users += 1
        self.outer = _buffers.get(self.ident)
        _buffers[self.ident] = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _users
        if self.outer is None:
            del _buffers[self.ident]
        else:
            _buffers[self.ident] = self.outer
        with _lock:
            _users -= 1
            if _users == 0 and _routers is not None:
                out, err = _routers  # kept: the next chunk reuses them over the same streams
                # A task that put a stream of its own in place keeps it (as without capture).
                if sys.stdout is out:
                    sys.stdout = out.original
                if sys.stderr is err:
                    sys.stderr = err.original

    def follow(self, indices: Sequence[int], result: ChunkResult) -> None:
        """The chunk's tasks are ``indices``, run in turn, each ending in ``result``."""
        self.indices, self.result = indices, result

    def add(self, text: str, stderr: bool) -> None:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return
        result = self.result
        running = -1
        if result is not None and self.indices:
            ended = len(result.values) + len(result.failures)  # indices come at the end
            running = self.indices[min(ended, len(self.indices) - 1)]
        if running != self.task:
            self._move()
            self.task = running
        if self.echo is not None:
            with _real_streams():
                self.echo(running, text, stderr)
        self.parts.append((stderr, text))
        self.size += len(text)
        if self.size > self.limit:
            self._trim()

    def _trim(self) -> None:
        parts = self.parts
        if self.head is None:
            self.head, parts = _split(parts, HEAD)
        self.parts, dropped = _last(parts, TAIL)
        self.cut += dropped
        self.size = sum(len(text) for _, text in self.parts)
        self.limit = 2 * TAIL

    def _move(self) -> None:
        """Move what the last task that wrote printed into the result."""
        index, result = self.task, self.result
        if index < 0 or not self.parts or result is None:
            return
        if self.head is not None or self.size > HEAD + TAIL:
            self._trim()
        parts = self.parts
        if self.head is not None:
            marker = (f"\n[remotemap: {self.cut} characters of this task's output cut here; "
                      f"it keeps the first {HEAD} and the last {TAIL}]\n")
            parts = [*self.head, (False, marker), *parts]
        text, spans = _join(parts)
        result.outputs[index] = text
        if spans:
            result.stderr_spans[index] = spans
        if self.echo is not None:
            with _real_streams():
                self.echo.end(index)
        self.parts, self.size, self.limit, self.head, self.cut = [], 0, HEAD + 2 * TAIL, None, 0
        self.task = -1

    def done(self) -> None:
        """The chunk ended: its last output goes in, and each failed task gets its own."""
        if self.task >= 0:
            self._move()
        if self.result is None or not self.result.outputs:
            return
        outputs, failures = self.result.outputs, self.result.failures
        if failures:
            for k, failure in enumerate(failures):
                if failure.index in outputs:
                    failures[k] = dataclasses.replace(failure, output=outputs[failure.index])


def _split(parts: list[tuple[bool, str]], n: int) -> tuple[list[tuple[bool, str]],
                                                           list[tuple[bool, str]]]:
    """The first ``n`` characters of ``parts``, and the rest."""
    head: list[tuple[bool, str]] = []
    for i, (stderr, text) in enumerate(parts):
        if len(text) >= n:
            head.append((stderr, text[:n]))
            rest = [(stderr, text[n:])] if text[n:] else []
            return head, rest + parts[i + 1:]
        head.append((stderr, text))
        n -= len(text)
    return head, []


def _last(parts: list[tuple[bool, str]], n: int) -> tuple[list[tuple[bool, str]], int]:
    """The last ``n`` characters of ``parts``, and how many characters were dropped."""
    kept: list[tuple[bool, str]] = []
    for i in range(len(parts) - 1, -1, -1):
        stderr, text = parts[i]
        if len(text) >= n:
            kept.append((stderr, text[len(text) - n:]))
            dropped = len(text) - n + sum(len(t) for _, t in parts[:i])
            return kept[::-1], dropped
        kept.append((stderr, text))
        n -= len(text)
    return kept[::-1], 0


def _join(parts: list[tuple[bool, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The text, and the (start, end) ranges of it written on stderr."""
    spans: list[tuple[int, int]] = []
    at = 0
    for stderr, text in parts:
        if stderr:
            if spans and spans[-1][1] == at:
                spans[-1] = (spans[-1][0], at + len(text))
            else:
                spans.append((at, at + len(text)))
        at += len(text)
    return "".join(text for _, text in parts), spans


@contextlib.contextmanager
def _real_streams() -> Iterator[None]:
    """The streams the routers stand for, while an echo writes: what it prints is not the
    task's, and a progress bar clears itself only for writes to the real streams."""
    routers = _routers
    if routers is None or not _users:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = routers[0].original, routers[1].original
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def merge_outputs(into: ChunkResult, part: ChunkResult) -> None:
    """Add what the tasks of ``part`` printed to ``into`` (a chunk run one task at a time)."""
    into.outputs.update(part.outputs)
    into.stderr_spans.update(part.stderr_spans)


def pieces(result: ChunkResult, index: int) -> list[tuple[bool, str]]:
    """Task ``index``'s output as (on stderr, text) pieces, in the order written."""
    text = result.outputs.get(index, "")
    out: list[tuple[bool, str]] = []
    at = 0
    for start, end in result.stderr_spans.get(index, ()):
        if start > at:
            out.append((False, text[at:start]))
        out.append((True, text[start:end]))
        at = end
    if at < len(text):
        out.append((False, text[at:]))
    return out


def write_line(text: str, stderr: bool) -> None:
    """Print a line on this process's stdout, or stderr when ``stderr`` (no progress bar)."""
    print(text, file=sys.stderr if stderr else sys.stdout, flush=True)


class Printer:
    """Shows tasks' output during a run: every line prefixed ``[task N] ``, on the stream it
    was written to, through ``write(line, stderr)`` (``Progress.write``: above the bar)."""

    def __init__(self, write: Callable[[str, bool], None]) -> None:
        self.write = write
        self.partial: dict[tuple[int, bool], str] = {}

    def __call__(self, index: int, text: str, stderr: bool) -> None:
        """Show the complete lines of ``text``; keep a last unfinished one for later."""
        lines = (self.partial.pop((index, stderr), "") + text).split("\n")
        if lines[-1]:
            self.partial[(index, stderr)] = lines[-1]
        prefix = PREFIX.format(index=index)
        for line in lines[:-1]:
            self.write(prefix + line, stderr)

    def end(self, index: int) -> None:
        """Task ``index`` ended: show its unfinished lines."""
        prefix = PREFIX.format(index=index)
        for stderr in (False, True):
            rest = self.partial.pop((index, stderr), None)
            if rest is not None:
                self.write(prefix + rest, stderr)

    def show(self, result: ChunkResult) -> None:
        """Show everything the tasks of ``result`` printed, task by task."""
        for index in sorted(result.outputs):
            for stderr, text in pieces(result, index):
                self(index, text, stderr)
            self.end(index)
