"""Warm ``ssh`` hosts: a host's connection and worker server, kept after a call for the next.

loky's reusable executor and a dask cluster keep their workers between calls; the ``ssh`` mode
keeps, for ``ssh.keep_alive`` seconds after a call, each host's connection and its worker
server (``python -m remotemap.worker serve``, its interpreter started and its imports done).
The next call of this process whose host and settings match takes it: it makes its own run
directory (0700, with the same checks as a cold start), uploads its function and sends the
server ``open`` with the new run's directory, key and environment (see ``remotemap.worker``).
A warm host that no longer answers is closed and the call connects anew.

What is kept is idle: only a run whose chunks all came back is kept, after its run directory
is removed. An entry is closed when its idle time expires, when the pool holds more than
``MAX_WARM``, and at interpreter exit; a process forked from this one never uses its parent's.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from remotemap.backends.remote_files import RemoteRun
from remotemap.integrity import new_key
from remotemap.protocol import FUNCTION, new_token, seal_file
from remotemap.server_client import ServerInfo
from remotemap.ssh import transfer

log = logging.getLogger("remotemap")

#: The most warm hosts kept at once, over every setting; the oldest goes first.
MAX_WARM = 16

#: Settings that change what the caller does with a host, not the connection or the server.
_NOT_IN_KEY = frozenset({"hosts", "n_jobs", "chunksize", "keep_remote_files", "fetch_dir",
                         "send", "keep_staged", "stage_dir", "keep_alive", "remote_dir"})


def keep_alive(settings: Mapping[str, Any]) -> float:
    """``ssh.keep_alive``: seconds a host stays warm after a call; 0 turns it off."""
    return max(0.0, float(settings.get("keep_alive") or 0.0))


def warm_key(host: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """What must match for a warm host to be reused: the host as named, every setting of the
    connection and the server (user, port, keys, ``python``, ``preload``, ``fetch``...), and
    the tasks' environment (the server's imports ran under it)."""
    kept = {name: value for name, value in settings.items() if name not in _NOT_IN_KEY}
    return json.dumps([host, kept, dict(env)], sort_keys=True, default=str)


@dataclass(eq=False)
class WarmHost:
    """An idle host: its connection (``remotemap.ssh.Connection``), its worker server (a
    ``RemoteProcess`` on it) and what the server said when it started."""

    connection: Any
    process: Any
    python: str
    info: ServerInfo
    uid: int = field(default=-1)

    def alive(self) -> bool:
        """Its link and server still up, as far as is known here without a round trip."""
        return bool(self.connection.is_connected and not self.process.closed
                    and self.process.poll() is None)

    def close(self) -> None:
        """Stop the server (stdin closed: it exits) and close the connection."""
        with contextlib.suppress(Exception):
            self.process.close_stdin()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=3)
        with contextlib.suppress(Exception):
            self.process.__exit__(None, None, None)  # kills it if it still runs
        with contextlib.suppress(Exception):
            self.connection.close()


@dataclass(eq=False)
class _Entry:
    key: str
    host: WarmHost
    timer: threading.Timer


class WarmPool:
    """The idle hosts of this process, each with the timer that closes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Entry] = []  # oldest first
        self._pid = os.getpid()
        self._at_exit = False

    def take(self, key: str) -> WarmHost | None:
        """The newest idle host kept under ``key`` that still looks alive, or None."""
        stale: list[WarmHost] = []
        found: WarmHost | None = None
        with self._lock:
            if os.getpid() != self._pid:  # a forked child: those links are the parent's
                return None
            for entry in reversed([e for e in self._idle if e.key == key]):
                self._idle.remove(entry)
                entry.timer.cancel()
                if entry.host.alive():
                    found = entry.host
                    break
                stale.append(entry.host)
        for host in stale:
            host.close()
        return found

    def keep(self, key: str, host: WarmHost, seconds: float) -> None:
        """Keep ``host`` idle for ``seconds``, then close it."""
        timer = threading.Timer(seconds, self._expire, (host,))
        timer.daemon = True
        with self._lock:
            if os.getpid() != self._pid:
                self._idle, self._pid = [], os.getpid()
            if not self._at_exit:
                atexit.register(self.close_all)
                self._at_exit = True
            self._idle.append(_Entry(key, host, timer))
            evicted, self._idle = self._idle[:-MAX_WARM], self._idle[-MAX_WARM:]
        timer.start()
        for entry in evicted:
            entry.timer.cancel()
            entry.host.close()

    def _expire(self, host: WarmHost) -> None:
        with self._lock:
            entries = [e for e in self._idle if e.host is host]
            for entry in entries:
                self._idle.remove(entry)
        if entries:
            log.debug("ssh: closing the warm connection to %s (idle time over)",
                      host.connection.spec.target)
            host.close()

    def close_all(self) -> None:
        """Close every idle host now (at interpreter exit, or for a caller who asks)."""
        with self._lock:
            if os.getpid() != self._pid:
                return
            entries, self._idle = self._idle, []
        for entry in entries:
            entry.timer.cancel()
            entry.host.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)


#: This process's pool.
POOL = WarmPool()


class WarmRemoteRun(RemoteRun):
    """A :class:`RemoteRun` that starts on a warm host when one matches, and leaves its host
    warm when it ends well (``ssh.keep_alive`` > 0) and ``may_keep`` says the call did."""

    may_keep: Callable[[], bool] = staticmethod(lambda: True)

    def __enter__(self) -> WarmRemoteRun:
        warm = POOL.take(self._warm_key()) if keep_alive(self.settings) > 0 else None
        if warm is not None and self._resume(warm):
            return self
        super().__enter__()
        return self

    def _warm_key(self) -> str:
        return warm_key(self.host, self.settings, self.options.env)

    def _resume(self, warm: WarmHost) -> bool:
        """Start this run on a warm host's server: its own run directory and function, then
        ``open``. False, with the warm host closed, when the host does not answer."""
        self.connection, self.process, self._python, self._uid = (
            warm.connection, warm.process, warm.python, warm.uid)
        try:  # a channel opened first: a link gone silent fails here within the timeout
            self.connection.transport.open_session(
                timeout=self.connection.spec.connect_timeout).close()
            variables = self._variables()
            layout = self.layout = self._make_run_dir()
            transfer.put_bytes(self.connection, layout.function,
                               seal_file(self.key, FUNCTION, self.function_blob))
            spec = {"root": layout.root, "key": self.key.hex(), "env": variables}
            self.process.write(f"open {json.dumps(spec)}\n".encode())  # never on the disk
            self.info = self._serve_on(self.process).wait_ready()
            self._tune()
        except Exception as exc:
            log.info("ssh: the warm connection to %s did not answer (%s); connecting anew",
                     self.host, exc)
            with contextlib.suppress(Exception):
                self._remove_run_dir()
            warm.close()
            self.connection = self.process = self.layout = self.info = self.server = None
            self._removed, self._uid = False, -1
            self.token, self.key = new_token(), new_key()  # nothing of this try is reused
            return False
        log.debug("ssh host %s: warm worker server %d reused", self.host, self.info.pid)
        return True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and self._keep():
            return
        super().__exit__(exc_type, exc, tb)

    def _keep(self) -> bool:
        """Remove the run directory and give the connection and server to the pool, if the
        server is idle, up, and of this remotemap version."""
        from remotemap._version import __version__

        seconds = keep_alive(self.settings)
        if seconds <= 0 or not self.may_keep() or self._running or self.process is None \
                or self.info is None or self.info.remotemap_version != __version__:
            return False
        if not self._drop_run_dir():
            return False
        warm = WarmHost(self.connection, self.process, self._python, self.info, self._uid)
        if not warm.alive():
            return False
        POOL.keep(self._warm_key(), warm, seconds)
        return True

    def _drop_run_dir(self) -> bool:
        """The server removes the run directory (one line each way, where ``rm`` over a new
        channel starts two processes); False if it did not say it did."""
        if self.settings.get("keep_remote_files") or self.layout is None:
            return True
        assert self._reader is not None
        try:
            self.process.write(b"drop\n")
            self._reader.timeout = 10.0
            said = self._reader.readline()
        except Exception as exc:  # the link or the server: closed the cold way
            log.debug("ssh host %s: drop failed: %s", self.host, exc)
            return False
        self._removed = said == b"dropped\n"
        return self._removed
