"""The progress of a run: a bar while it runs, one summary line when it ends.

Where someone is watching (stderr is a terminal, or the caller is a Jupyter kernel), or
anywhere with ``progress=True``, a bar is drawn on stderr at ``0/N`` the moment the run starts,
advanced as tasks finish, and replaced when the run ends by one line::

    remotemap local: 40 tasks in 3.2 s, 0 failed

Elsewhere (a pipe, a log file, a batch job) nothing is printed, as joblib prints nothing by
default: a library call should not write to a script's output unasked. The same figures are
logged at DEBUG on the ``remotemap`` logger by ``remote_map``.

In a Jupyter kernel the bar is a widget when ipywidgets is installed, else plain text (which
notebooks draw in place too), never tqdm.auto's ``IProgress not found`` warning.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from remotemap.tasks import ChunkResult


class Progress:
    """Counts finished tasks; draws the bar and the summary line when they are to be seen."""

    def __init__(self, total: int, enabled: bool | None, description: str) -> None:
        self.total = total
        self.description = description
        #: Tasks finished (succeeded or failed for good), those failed for good, failures
        #: that were retried, and tasks whose result was kept from an earlier run.
        self.done = self.failed = self.retried = self.kept = 0
        self._started = time.monotonic()
        self._status = ""
        self._file: TextIO = sys.stderr
        self._bar: Any = None
        self._ticker: _Ticker | None = None
        self._running: Callable[[], int] | None = None
        # The driver's thread counts results, the ticker's adds what runs: one at a time.
        self._lock = threading.Lock()
        if enabled is None:
            enabled = _stderr_is_terminal() or in_kernel()
        if enabled and total > 0:
            # delay=0: drawn at 0/N at once, so a run that waits (workers starting, a queue)
            # shows that it has started; leave=False: the summary line takes its place.
            self._bar = bar_class()(total=total, desc=description, unit="task", delay=0.0,
                                    file=self._file, leave=False, dynamic_ncols=True)
            self._ticker = _Ticker(self._tick)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int, *, failed: int = 0, retried: int = 0) -> None:
        """``n`` more tasks finished, ``failed`` of them failed for good; ``retried`` failed
        attempts go again (they are not finished)."""
        self.done += n
        self.failed += failed
        self.retried += retried
        if self._bar is None:
            return
        with self._lock:
            if failed or retried:
                self._show_postfix()
            # The bar may be ahead: it showed tasks of this chunk as they finished (follow).
            if self.done > self._bar.n:
                self._bar.update(min(self.done, self.total) - self._bar.n)

    def follow(self, running: Callable[[], int] | None) -> None:
        """Also show the tasks that finished in chunks still running: ``running()`` counts
        them (any thread may call it), and the bar is redrawn with it five times a second."""
        if self._bar is not None and self._ticker is not None and running is not None:
            self._running = running
            self._ticker.interval = _TICK_FOLLOWING

    def _tick(self) -> None:
        with self._lock:
            if self._bar is None:
                return
            if self._running is not None:
                ahead = min(self.total, self.done + self._running())
                if ahead > self._bar.n:
                    self._bar.n = ahead
            self._bar.refresh()

    def restored(self, n: int) -> None:
        """``n`` tasks have a result kept from an earlier run (resume): finished already."""
        self.kept += n
        self.update(n)

    def set_status(self, text: str) -> None:
        """Show ``text`` after the bar (why a cluster run is still pending, say); "" clears it."""
        self._status = text
        if self._bar is not None:
            with self._lock:
                self._show_postfix()

    def _show_postfix(self) -> None:
        parts = [self._status, f"{self.failed} failed" if self.failed else "",
                 f"{self.retried} retried" if self.retried else ""]
        self._bar.set_postfix_str(", ".join(p for p in parts if p))

    def write(self, text: str, *, stderr: bool = False) -> None:
        """Print ``text`` (lines a task printed, say) above the bar, which is redrawn below it,
        instead of through it; on stdout, or stderr when ``stderr``."""
        stream = sys.stderr if stderr else sys.stdout
        bar = self._bar  # once: another thread may be closing it
        if bar is None:
            print(text, file=stream, flush=True)
            return
        bar.write(text, file=stream)  # clears the bar, writes, redraws it, under tqdm's lock
        stream.flush()

    def summary(self, interrupted: bool = False) -> str:
        """One line: tasks, time, failures (``remotemap local: 40 tasks in 3.2 s, 0 failed``)."""
        tasks = (f"{self.total} tasks" if self.done >= self.total
                 else f"{self.done} of {self.total} tasks")
        text = (f"remotemap {self.description}: {tasks} in "
                f"{_duration(time.monotonic() - self._started)}, {self.failed} failed")
        if self.retried:
            text += f", {self.retried} retried"
        if self.kept:
            text += f" ({self.kept} kept from an earlier run)"
        if self.done < self.total:
            text += ", interrupted" if interrupted else ", stopped"
        return text

    def close(self, interrupted: bool = False) -> None:
        """Replace the bar by the summary line (nothing when no bar was shown)."""
        if self._bar is None:
            return
        if self._ticker is not None:
            self._ticker.stop()
        with self._lock:
            bar, self._bar = self._bar, None
        bar.close()
        print(self.summary(interrupted), file=self._file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(interrupted=exc_type is not None and issubclass(exc_type, KeyboardInterrupt))


#: Seconds between redraws while nothing else draws the bar; while following running chunks.
_TICK = 1.0
_TICK_FOLLOWING = 0.2


class _Ticker:
    """Calls ``tick`` (a redraw) every ``interval`` seconds from a thread of its own.

    tqdm draws only when told of progress, and skips a draw that comes within 0.1 s of the
    previous one: without this, the bar would keep showing 0/N (and a frozen clock) for as long
    as the next task takes when the first finished just after the bar appeared.
    """

    def __init__(self, tick: Callable[[], None]) -> None:
        self.interval = _TICK
        self._tick = tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remotemap-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self._tick()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class TaskCounter:
    """Tasks finished inside chunks still running, as the workers count them (``local``).

    Each running chunk gets a slot, an 8-byte integer in a small file mapped in memory (in
    ``/dev/shm`` where there is one); the worker running the chunk writes into it how many of
    the chunk's tasks have ended, ten times a second (:class:`ChunkWatch`), and the caller
    adds the slots up. One writer per slot and aligned 8-byte writes: no lock is needed.
    """

    def __init__(self, slots: int) -> None:
        where = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(prefix="remotemap-progress-", dir=where)
        try:
            os.ftruncate(fd, 8 * slots)
            self._map = mmap.mmap(fd, 8 * slots)
        finally:
            os.close(fd)
        self._counts = memoryview(self._map).cast("q")
        self._free = list(range(slots - 1, -1, -1))
        self._closed = False

    def take(self) -> int | None:
        """A slot for a chunk about to start; None when all are taken (it is not counted)."""
        return self._free.pop() if self._free else None

    def release(self, slot: int) -> None:
        """The chunk's result came back: its tasks are counted by the driver from now on."""
        self._counts[slot] = 0
        self._free.append(slot)

    def running(self) -> int:
        """Tasks ended in the chunks holding a slot (from any thread; 0 once closed)."""
        try:
            return 0 if self._closed else sum(self._counts)
        except ValueError:  # closed by the driver's thread meanwhile
            return 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._counts.release()
        self._map.close()
        os.unlink(self.path)


class ChunkWatch:
    """In a worker: copies how many tasks of the running chunk have ended into its slot of a
    :class:`TaskCounter`, every :data:`_TICK_WORKER` seconds, from a thread of its own.

    The tasks loop pays nothing for it (the thread reads the lengths of the result's lists as
    ``run_chunk`` fills them), and no write can land after the chunk ended: :meth:`unwatch`
    takes the lock the thread writes under, and the caller frees the slot only after that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[memoryview, int, ChunkResult] | None = None
        self._busy = threading.Event()
        self._maps: dict[str, memoryview] = {}  # the current run's counter file, mapped once
        threading.Thread(target=self._run, name="remotemap-count", daemon=True).start()

    def watch(self, where: tuple[str, int]) -> Callable[[ChunkResult], None] | None:
        """For ``run_chunk(started=)``: the chunk with slot ``where`` (a counter's file, a
        slot) starts; None when the file is gone (the run ended meanwhile)."""
        path, slot = where
        counts = self._maps.get(path)
        if counts is None:
            self._maps.clear()  # one run at a time: unmap the previous run's file
            try:
                with open(path, "r+b") as file:
                    counts = memoryview(mmap.mmap(file.fileno(), 0)).cast("q")
            except (OSError, ValueError):
                return None
            self._maps[path] = counts
        mapped = counts

        def started(result: ChunkResult) -> None:
            with self._lock:
                self._current = (mapped, slot, result)
                self._busy.set()

        return started

    def unwatch(self) -> None:
        with self._lock:
            self._current = None

    def _run(self) -> None:
        while self._busy.wait():
            time.sleep(_TICK_WORKER)
            with self._lock:
                if self._current is None:
                    self._busy.clear()  # idle until the next chunk (set under the same lock)
                    continue
                counts, slot, result = self._current
                # values: run_chunk sets the indices only at the end
                counts[slot] = len(result.values) + len(result.failures)


#: Seconds between a worker's writes of its running chunk's count.
_TICK_WORKER = 0.1


def bar_class() -> Any:
    """tqdm's widget bar in a Jupyter kernel that can show widgets; its text bar elsewhere.

    Chosen here rather than by ``tqdm.auto``, which warns ``IProgress not found`` in a kernel
    without ipywidgets (and ``TqdmExperimentalWarning`` in one with it).
    """
    if in_kernel() and _widgets_shown():
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar
    from tqdm.std import tqdm as text_bar

    return text_bar


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (notebook, lab, VS Code, qtconsole...)."""
    if "ipykernel.zmqshell" not in sys.modules:  # a kernel has imported it; never import it
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # IPython half imported or replaced: not a kernel we can draw in
        return False
    return type(shell).__name__ == "ZMQInteractiveShell"


def _widgets_shown() -> bool:
    """ipywidgets is installed and the front end draws widgets (qtconsole and Spyder don't)."""
    if any(name == "QT_API" or name.startswith("SPYDER") for name in os.environ):
        return False
    return importlib.util.find_spec("ipywidgets") is not None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
