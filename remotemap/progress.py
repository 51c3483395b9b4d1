"""A progress bar for runs long enough to want one, and none where nobody can see it."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

#: Seconds a run must last before its bar appears, so quick runs print nothing at all.
_SHOW_AFTER = 0.5


class Progress:
    """Counts finished tasks; draws a tqdm bar on stderr when asked or when it is a terminal."""

    def __init__(self, total: int, enabled: bool | None, description: str) -> None:
        # Asked for explicitly: shown at once and left on screen. By default: only on a
        # terminal, only once the run has lasted long enough to be worth a bar, and erased
        # when done so quick runs leave no trace.
        explicit = bool(enabled)
        if enabled is None:
            enabled = _stderr_is_terminal()
        self._bar: Any = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                desc=description,
                unit="task",
                delay=0.0 if explicit else _SHOW_AFTER,
                file=sys.stderr,
                leave=explicit,
                dynamic_ncols=True,
            )

    def update(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def set_status(self, text: str) -> None:
        """Show ``text`` after the counts (why the run waits, say); "" clears it."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def write(self, text: str, *, stderr: bool = False) -> None:
        """Print ``text`` (lines a task printed, say) above the bar, which is redrawn below it,
        instead of through it; on stdout, or stderr when ``stderr``."""
        stream = sys.stderr if stderr else sys.stdout
        if self._bar is None:
            print(text, file=stream, flush=True)
            return
        from tqdm.auto import tqdm

        tqdm.write(text, file=stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
