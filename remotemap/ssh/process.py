"""Remote commands on SSH channels: :class:`RemoteProcess` (write stdin, read stdout by
lines, signal it) and :func:`collect` (all output of a finished command).

stderr is always read concurrently. That is not a nicety: SSH flow control gives a channel one
window for stdout and stderr together, so unread stderr would stall stdout too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from remotemap.ssh.errors import CommandTimeout, SSHError

if TYPE_CHECKING:
    import paramiko

#: The most stderr kept per process (the latest bytes; older ones are dropped).
STDERR_LIMIT = 1 << 20
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Where:
    """Host, port and user, to name in errors."""

    host: str
    port: int
    user: str


@dataclass(frozen=True)
class CompletedCommand:
    """The outcome of ``Connection.run`` (all its output, from :func:`collect`).
    ``exit_status`` is -1 when the server sent none (the command was killed by a signal)."""

    argv: list[str]
    exit_status: int
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


# Prints its pid, then becomes the command (same pid: sshd made it a session and group leader,
# and bash execs a lone command). exec finds builtins like printf as programs on PATH.
_PID_WRAPPER = 'echo "$$"; exec "$@"'


def with_pid(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that the first line of stdout is the remote pid."""
    return ["/bin/sh", "-c", _PID_WRAPPER, "remotemap", *argv]


def read_pid(
    channel: paramiko.Channel, timeout: float, where: Where, argv: Sequence[str]
) -> tuple[int, bytes]:
    """The pid line written by :func:`with_pid`, and any stdout read past it."""
    end = time.monotonic() + timeout
    data = b""
    try:
        while b"\n" not in data:
            channel.settimeout(max(end - time.monotonic(), 0.001))
            chunk = channel.recv(64)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise CommandTimeout(
            f"{argv[0]!r} did not start within {timeout:g} s",
            host=where.host,
            port=where.port,
            user=where.user,
            argv=list(argv),
            timeout=timeout,
        ) from None
    finally:
        channel.settimeout(None)
    line, _, rest = data.partition(b"\n")
    if not line.strip().isdigit():
        raise SSHError(
            f"cannot start {argv[0]!r}: expected a pid, got {data[:200]!r}"
            " (does the login shell print something?)",
            host=where.host, port=where.port, user=where.user, argv=list(argv),
        )  # fmt: skip
    return int(line), rest


class RemoteProcess:
    """One remote command with pipes: ``write``/``close_stdin``, ``readline``, ``stderr``,
    ``poll``/``wait``, ``close``. A context manager; closing the channel gives the remote
    process EOF on stdin (and SIGPIPE if it writes)."""

    def __init__(
        self,
        channel: paramiko.Channel,
        argv: Sequence[str],
        where: Where,
        pid: int,
        stdout: bytes = b"",
        send_signal: Callable[[int, str], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        #: The remote process id (also its process group, see Connection.send_signal).
        self.pid = pid
        self._chan = channel
        self._where = where
        self._send_signal = send_signal
        self._buffer = bytearray(stdout)
        self._eof = False
        self._read_lock = threading.Lock()
        self._stderr = bytearray()
        self._stderr_lock = threading.Lock()
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, name=f"remotemap-ssh-stderr-{argv[0]}", daemon=True
        )
        self._stderr_thread.start()

    def __repr__(self) -> str:
        w = self._where
        return f"<RemoteProcess {self.argv!r} on {w.user}@{w.host}:{w.port}>"

    def _error(self, cls: type[SSHError], message: str, **details: Any) -> SSHError:
        w = self._where
        return cls(message, host=w.host, port=w.port, user=w.user, argv=self.argv, **details)

    def _drain_stderr(self) -> None:
        while True:
            try:
                data = self._chan.recv_stderr(_CHUNK)
            except TimeoutError:
                # The channel timeout set for a stdout read applies here too: keep going.
                if self._chan.closed:
                    return
                continue
            except OSError:
                return
            if not data:
                return
            with self._stderr_lock:
                self._stderr += data
                if len(self._stderr) > STDERR_LIMIT:
                    del self._stderr[: len(self._stderr) - STDERR_LIMIT]

    @property
    def stderr(self) -> bytes:
        """The stderr received so far (at most the last :data:`STDERR_LIMIT` bytes)."""
        with self._stderr_lock:
            return bytes(self._stderr)

    def write(self, data: bytes) -> None:
        """Send ``data`` to the process's stdin (all of it, blocking on flow control)."""
        try:
            self._chan.sendall(data)
        except OSError as exc:
            raise self._error(SSHError, f"cannot write to {self.argv[0]}: {exc}") from exc

    def close_stdin(self) -> None:
        """Send EOF: the process reads end-of-file once it has read what was written."""
        self._chan.shutdown_write()

    def readline(self, timeout: float | None = None) -> bytes:
        """The next line of stdout, with its ``\\n``; the rest (maybe ``b""``) at EOF.

        Raises :class:`CommandTimeout` when no full line arrives within ``timeout`` seconds;
        what did arrive stays buffered for the next call.
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            while True:
                cut = self._buffer.find(b"\n")
                if cut >= 0:
                    line = bytes(self._buffer[: cut + 1])
                    del self._buffer[: cut + 1]
                    return line
                if self._eof:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                self._fill(end, timeout)

    def read_exact(self, size: int, timeout: float | None = None) -> bytes:
        """The next ``size`` bytes of stdout (what follows a line that announced them);
        EOFError if stdout ends first, :class:`CommandTimeout` after ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            while len(self._buffer) < size and not self._eof:
                self._fill(end, timeout)
            if len(self._buffer) < size:
                raise EOFError(f"{self.argv[0]} ended {size - len(self._buffer)} bytes short")
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    def _fill(self, end: float | None, timeout: float | None) -> None:
        """Add what stdout sends next to the buffer (waiting until ``end`` at most), or note
        its end. The caller holds the read lock."""
        remaining = None if end is None else max(end - time.monotonic(), 0.001)
        data = self._recv(remaining, timeout)
        if data:
            self._buffer += data
        else:
            self._eof = True

    def _recv(self, wait: float | None, timeout: float | None) -> bytes:
        self._chan.settimeout(wait)
        try:
            return self._chan.recv(_CHUNK)
        except TimeoutError:
            raise self._error(
                CommandTimeout,
                f"no line from {self.argv[0]} within {timeout:g} s",
                timeout=timeout,
            ) from None
        finally:
            # The timeout is the channel's, shared with the stderr thread: don't leave a short
            # one behind for it to spin on.
            self._chan.settimeout(None)

    def poll(self) -> int | None:
        """The exit status if the process has ended, else None (-1: killed by a signal)."""
        if self._chan.exit_status_ready():
            return self._chan.recv_exit_status()
        return None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status; :class:`CommandTimeout` after ``timeout`` seconds."""
        if not self._chan.status_event.wait(timeout):
            raise self._error(
                CommandTimeout,
                f"{self.argv[0]} still running after {timeout:g} s",
                timeout=timeout,
            )
        return self._chan.recv_exit_status()

    def send_signal(self, signal: str) -> None:
        """Signal the remote process (and its group) by name: ``"TERM"``, ``"KILL"``..."""
        if self._send_signal is None:
            raise RuntimeError("this process handle cannot send signals")
        self._send_signal(self.pid, signal)

    def terminate(self) -> None:
        self.send_signal("TERM")

    def kill(self) -> None:
        self.send_signal("KILL")

    def close(self) -> None:
        """Close the channel (idempotent). The process sees EOF on stdin; one that ignores it
        keeps running: use :meth:`kill` (leaving the ``with`` block does)."""
        self._chan.close()
        self._stderr_thread.join(timeout=1.0)

    @property
    def closed(self) -> bool:
        return bool(self._chan.closed)

    def __enter__(self) -> RemoteProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._eof:  # its stdout ended: the exit status is normally on its way
                self._chan.status_event.wait(0.2)
            if self.poll() is None and self._send_signal is not None:
                with contextlib.suppress(SSHError):
                    self.kill()
        finally:
            self.close()


def collect(
    channel: paramiko.Channel, stdin: bytes | None, timeout: float | None
) -> tuple[int | None, bytes, bytes]:
    """Exit status (None on timeout), stdout and stderr of a started command.

    stdout, stderr and stdin move on separate threads: SSH flow control stalls a command that
    writes much output while we are still sending its input, if nobody reads meanwhile. The
    timeout closes the channel, which wakes every reader.
    """
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        channel.close()

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    err: list[bytes] = []
    threads = [threading.Thread(target=_drain, args=(channel.recv_stderr, err), daemon=True)]
    if stdin:
        threads.append(threading.Thread(target=_feed, args=(channel, stdin), daemon=True))
    else:
        channel.shutdown_write()
    if timer is not None:
        timer.daemon = True
        timer.start()
    for thread in threads:
        thread.start()
    try:
        out: list[bytes] = []
        _drain(channel.recv, out)
        for thread in threads:
            thread.join()
        # Set by the exit status, or by the channel closing (then the status stays -1).
        channel.status_event.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        return None, b"".join(out), b"".join(err)
    return channel.exit_status, b"".join(out), b"".join(err)


def _drain(recv: Callable[[int], bytes], into: list[bytes]) -> None:
    while True:
        try:
            data = recv(_CHUNK)
        except OSError:
            return
        if not data:
            return
        into.append(data)


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    try:
        channel.sendall(data)
        channel.shutdown_write()
    except OSError:
        pass  # the command exited or the channel closed: its status tells the rest
