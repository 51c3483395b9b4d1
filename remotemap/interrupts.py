"""SIGTERM during a run unwinds like Ctrl-C, so workers are stopped and run files removed; and
a real Ctrl-C is told apart from a task raising ``KeyboardInterrupt`` (:class:`SigintWatch`).

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
from typing import Any


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


class SigintWatch:
    """Tells a real Ctrl-C (SIGINT) apart from a task that raises ``KeyboardInterrupt`` itself.

    While installed (main thread only), SIGINT first sets :attr:`received`, then goes to the
    handler that was there (Python's default raises ``KeyboardInterrupt``). The caller resets
    :attr:`received` before each chunk: a ``KeyboardInterrupt`` from a task while it is False
    is that task's failure, not a reason to stop the run.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False
        #: True when a KeyboardInterrupt cannot be told apart: then every one is taken as real.
        self._always = False
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous = previous
                signal.signal(signal.SIGINT, self._note)
                self._installed = True
            else:
                # SIG_IGN or SIG_DFL: a Ctrl-C raises nothing. None: a handler set outside
                # Python, which cannot be wrapped: every KeyboardInterrupt is real, as before.
                self._always = previous is None
        # (In another thread no signal arrives: every KeyboardInterrupt is a task's.)
        self.received = self._always

    def _note(self, signum: int, frame: FrameType | None) -> Any:
        self.received = True
        return self._previous(signum, frame)

    def interrupted(self) -> bool:
        return self.received

    def reset(self) -> None:
        self.received = self._always

    def close(self) -> None:
        if self._installed:
            self._installed = False
            if signal.getsignal(signal.SIGINT) == self._note:  # not replaced by the caller since
                signal.signal(signal.SIGINT, self._previous)
