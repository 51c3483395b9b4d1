"""SIGTERM during a run unwinds like Ctrl-C, so workers are stopped and run files removed.

Python's default SIGTERM action ends the process on the spot, skipping every ``finally``. While
a run is in progress (in the main thread, with no handler of the caller's own in place) a
SIGTERM instead raises ``SystemExit(143)``, the exit status a shell reports for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def terminate_unwinds() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield  # the caller handles SIGTERM itself: leave it alone
        return
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
