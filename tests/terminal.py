"""A program run on a pseudo-terminal, and the screen a terminal would show for what it wrote.

The program's stdin, stdout and stderr are the terminal (so ``isatty()`` is true, as for a
user at a shell); the bytes it writes are read from the master side and replayed on a small
screen model that knows what a progress bar uses: printable characters overwrite, ``\\r`` goes
back to the start of the line, ``\\n`` down a line, and the ANSI "cursor up" and "erase line"
sequences.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


class Terminal:
    """``python -c code args`` on a pty of ``columns`` x 24."""

    def __init__(self, code: str, *args: str, columns: int = 80) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm"}
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], stdin=slave,
                                        stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                        start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:  # EIO: the program ended and closed its side
                time.sleep(timeout)

    def screen(self) -> list[str]:
        """The lines on the screen now, trailing blanks removed."""
        return render(self.output.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> list[str]:
        """Read until a line of the screen matches ``pattern`` (a regex); the screen then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.05)
            if any(re.search(pattern, line) for line in self.screen()):
                return self.screen()
        raise AssertionError(f"no line matched {pattern!r} in {timeout} s; the screen:\n"
                             + "\n".join(self.screen()) + f"\nbytes: {self.output!r}")

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Read until the program exits (it must exit 0); the screen it left."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        self._read(0.05)
        code = self.process.poll()
        if code is None:
            self.process.kill()
        assert code == 0, f"exit status {code}; the screen:\n" + "\n".join(self.screen())
        return self.screen()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def render(text: str) -> list[str]:
    """The screen that ``text`` leaves: lines as a terminal shows them."""
    lines: list[list[str]] = [[]]
    row = col = 0
    pos = 0
    while pos < len(text):
        csi = _CSI.match(text, pos)
        if csi:
            count = int(csi[1] or 1)
            if csi[2] == "A":
                row = max(0, row - count)
            elif csi[2] == "K":
                del lines[row][col:]
            pos = csi.end()
            continue
        char = text[pos]
        pos += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
            if row == len(lines):
                lines.append([])
        elif char >= " ":
            line = lines[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = char
            col += 1
    shown = ["".join(line).rstrip() for line in lines]
    while shown and not shown[-1]:
        shown.pop()
    return shown
