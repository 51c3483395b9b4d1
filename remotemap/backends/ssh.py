"""``ssh``: tasks run on other hosts over SSH; files cross by SFTP.

One thread per host keeps one connection for the whole run. It stages the function into a
private run directory on the host, starts the same worker server as ``local_with_dumps``
(``python -m remotemap.worker serve``) over an SSH channel, and then takes chunks from a queue
shared by every host as it has room for them - a fast host takes more - uploading each chunk,
telling the server to run it, and downloading its outcome when the server says it is done.

A dropped connection puts the host's unfinished chunks back in the queue (to be run on a new
connection or by another host); outcomes are only read from a live run, so nothing is lost or
counted twice. A chunk that has lost its host ``MAX_ATTEMPTS`` times fails as ``lost``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.remote_fetch import fetch_task_files
from remotemap.backends.remote_files import RemoteRun, remote_dir
from remotemap.backends.ssh_options import SSH
from remotemap.backends.ssh_warm import WarmRemoteRun
from remotemap.backends.staging import SessionStaging, StagingStopped, staging_plan
from remotemap.errors import ConfigError, TaskFailure
from remotemap.execution import lost_chunk_result, pickle_function
from remotemap.protocol import new_token
from remotemap.server_client import WorkerServerGone
from remotemap.ssh.lib import import_paramiko_quietly
from remotemap.tasks import Chunk, ChunkResult, auto_chunksize

log = logging.getLogger("remotemap")

#: How many times a chunk may lose its host (connection dropped) before it fails as ``lost``.
MAX_ATTEMPTS = 3
#: How many times a host thread reconnects after its connection dropped.
RECONNECTS = 2
#: Chunks a host holds uploaded beyond those running, ready to start the moment a slot frees.
AHEAD = 1


class _Dispatch:
    """The queue of chunks shared by the host threads, with an account of each one."""

    def __init__(self, hosts: list[str]) -> None:
        self._queue: collections.deque[Chunk] = collections.deque()
        #: The hosts still in the run, by runner index (a host may be listed twice).
        self._live = dict(enumerate(hosts))
        self._ready = threading.Condition()
        self._attempts: collections.Counter[int] = collections.Counter()
        self.results: queue.Queue[ChunkResult | BaseException | None] = queue.Queue()
        #: Failures of tasks left out of a chunk when it was staged, by chunk id: they go with
        #: the chunk's result, from whichever host gives it (see ``RemoteRun.stage``).
        self.pending: dict[int, list[TaskFailure]] = {}
        self.stop = threading.Event()
        #: False once the call was cut short (Ctrl-C, an error, fail-fast): no host stays warm.
        self.keep_hosts = True

    def put(self, chunk: Chunk) -> None:
        with self._ready:
            self._queue.append(chunk)
            self._ready.notify()

    def take(self, wait: float = 0.0) -> Chunk | None:
        """The next chunk to run; waits up to ``wait`` seconds for one."""
        with self._ready:
            if not self._queue and wait > 0:
                self._ready.wait(wait)
            return self._queue.popleft() if self._queue else None

    def take_ahead(self) -> Chunk | None:
        """A chunk for a host whose slots are all busy to hold ready, if enough are queued
        that every other host still finds one: at the end of a run, a chunk waiting on a busy
        host would leave an idle one waiting for it."""
        with self._ready:
            return self._queue.popleft() if len(self._queue) >= len(self._live) else None

    def close(self) -> None:
        """Stop: a host thread waiting for a chunk hears it at once."""
        with self._ready:
            self.stop.set()
            self._ready.notify_all()

    def queued(self) -> list[Chunk]:
        with self._ready:
            chunks, self._queue = list(self._queue), collections.deque()
            return chunks

    def leave(self, index: int) -> list[str]:
        """Runner ``index``'s host leaves the run; the hosts still in it."""
        with self._ready:
            self._live.pop(index, None)
            return list(self._live.values())

    def give_back(self, chunks: Iterable[Chunk], why: str, host: str) -> None:
        """Chunks whose host was lost go back to the queue, unless they were lost too often."""
        for chunk in chunks:
            with self._ready:
                self._attempts[chunk.id] += 1
                give_up = self._attempts[chunk.id] >= MAX_ATTEMPTS
            if give_up:
                result = lost_chunk_result(
                    chunk, f"was lost {MAX_ATTEMPTS} times ({why})", kind="lost", host=host)
                result.failures += self.pending.pop(chunk.id, [])
                self.results.put(result)
            else:
                self.put(chunk)


class _HostRunner(threading.Thread):
    """Runs chunks on one host until the queue is empty, reconnecting if the link drops."""

    def __init__(self, index: int, host: str, settings: Mapping[str, Any], blob: bytes,
                 dispatch: _Dispatch, options: TaskOptions,
                 staging: SessionStaging | None = None) -> None:
        super().__init__(name=f"remotemap-ssh-{host}", daemon=True)
        self.index = index
        self.host = host
        self.settings = settings
        self.blob = blob
        self.dispatch = dispatch
        self.options = options
        self.error: BaseException | None = None
        self.chunks_done = 0
        self.staging = staging.host(host) if staging is not None else None

    def run(self) -> None:
        try:
            self._run()
        finally:  # however it ended, this host is no longer one the others can count on
            self.dispatch.leave(self.index)
            if self.staging is not None:  # left by a lost link: the others may clean up
                self.staging.release(self.index, None)

    def _run(self) -> None:
        from paramiko import SSHException

        from remotemap.ssh import AuthenticationFailed, HostKeyError, SSHError

        drops = 0
        while not self.dispatch.stop.is_set():
            in_flight: dict[int, Chunk] = {}
            try:
                run = WarmRemoteRun(self.host, self.settings, self.blob, self.options,
                                    self.staging, self.index, self.dispatch.stop.is_set,
                                    self.dispatch.pending)
                run.may_keep = lambda: self.dispatch.keep_hosts
                with run as remote:
                    with contextlib.suppress(StagingStopped):  # closing: clean up below
                        self._serve(remote, in_flight)
                    if self.staging is not None:
                        self.staging.release(self.index, remote.target())
                return
            except (HostKeyError, AuthenticationFailed) as exc:
                self.error = exc  # no retry can fix these, and no other host should cover
                self.dispatch.results.put(exc)
                return
            except (SSHError, SSHException, WorkerServerGone, OSError, EOFError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                self.dispatch.give_back(in_flight.values(), why, self.host)
                drops += 1
                if self.chunks_done == 0 and drops == 1 and not in_flight:
                    self.error = exc  # never got going: let the others carry on
                    log.warning("ssh host %s is not usable, %s: %s",
                                self.host, self._what_next(), exc)
                    return
                if drops > RECONNECTS:
                    self.error = exc
                    log.warning("ssh host %s dropped %d times; giving it up, %s: %s",
                                self.host, drops, self._what_next(), exc)
                    return
                log.warning("connection to %s lost (%s); %d unfinished chunk(s) go back to the "
                            "queue; reconnecting", self.host, exc, len(in_flight))
                time.sleep(0.2 * drops)
            except BaseException as exc:
                self.error = exc
                self.dispatch.give_back(in_flight.values(), repr(exc), self.host)
                self.dispatch.results.put(exc)
                return

    def _what_next(self) -> str:
        """What the run does without this host, truly: it goes on only if others are left."""
        others = self.dispatch.leave(self.index)
        if not others:
            return "and no other host is left: the run stops"
        return f"the run goes on without it, on {', '.join(others)}"

    def _serve(self, remote: RemoteRun, in_flight: dict[int, Chunk]) -> None:
        """Keep the host's slots busy: besides the chunks running, up to ``AHEAD`` more are
        uploaded and wait their turn, so a slot that frees is given its next chunk at once
        (one line to the server), before the finished chunk's outcome is downloaded. A server
        that holds chunks itself (``remote.queues``) is sent one ahead per slot, each told to
        run at once: it starts them as its slots free, with no round trip in between."""
        slots = remote.slots
        ahead = slots if remote.queues else AHEAD
        waiting: collections.deque[int] = collections.deque()  # uploaded, not started
        while not self.dispatch.stop.is_set():
            while waiting and len(in_flight) - len(waiting) < slots:
                remote.start(waiting.popleft())
            while len(in_flight) < slots + ahead:
                free = len(in_flight) - len(waiting) < slots  # a slot is free for it
                start = free or remote.queues
                chunk = (self.dispatch.take(wait=0.0 if in_flight else 0.1) if free
                         else self.dispatch.take_ahead())
                if chunk is None:
                    break
                in_flight[chunk.id] = chunk
                failed = remote.stage(chunk, start=start)
                if failed is not None:
                    del in_flight[chunk.id]
                    self.dispatch.results.put(failed)
                elif not start:
                    waiting.append(chunk.id)
            if not in_flight:
                continue
            done = remote.next_done(timeout=0.2)
            if done is None:
                continue
            if waiting:  # the freed slot first; the outcome is fetched while it runs
                remote.start(waiting.popleft())
            self._finish(remote, in_flight, *done)

    def _finish(self, remote: RemoteRun, in_flight: dict[int, Chunk], chunk_id: int,
                status: str) -> None:
        chunk = in_flight[chunk_id]
        result = remote.collect(chunk, status)
        if status == "exit:0" and self.settings.get("fetch"):
            fetch_task_files(remote, chunk, result, self.settings)
        del in_flight[chunk_id]  # only now: a link lost while collecting gives it back
        self.chunks_done += 1
        self.dispatch.results.put(result)


class SSHBackend(Backend):
    name = "ssh"
    config_section = SSH

    @classmethod
    def unavailable_reason(cls, settings: Mapping[str, Any]) -> str | None:
        try:
            import_paramiko_quietly()
        except ImportError:
            return "paramiko is not installed (pip install 'remotemap[ssh]')"
        return None

    @property
    def hosts(self) -> list[str]:
        hosts = self.settings.get("hosts") or []
        if isinstance(hosts, str):
            hosts = [hosts]
        if not hosts:
            raise ConfigError("no SSH hosts to run on: set ssh.hosts in the config file "
                              "(remotemap config set ssh.hosts '[\"host1\", \"host2\"]') or "
                              "pass hosts=[...]", key="ssh.hosts")
        return list(hosts)

    def chunksize(self, n_tasks: int) -> int:
        # Without knowing the hosts' CPU counts yet, assume two slots a host.
        slots = len(self.hosts) * (self.settings.get("n_jobs") or 2)
        return int(self.settings.get("chunksize") or auto_chunksize(n_tasks, max(1, slots)))

    def open(self, function: Callable[..., Any], options: TaskOptions) -> SSHSession:
        remote_dir(self.settings)  # refused before any host is reached
        return SSHSession(self.hosts, self.settings, pickle_function(function), options,
                          SessionStaging(staging_plan(self.settings, new_token())))


class SSHSession(Session):
    """One thread (and connection) per host, all drawing chunks from one queue."""

    def __init__(self, hosts: list[str], settings: Mapping[str, Any], blob: bytes,
                 options: TaskOptions, staging: SessionStaging | None = None) -> None:
        self.capacity = max(8, 4 * len(hosts) * int(settings.get("n_jobs") or 2))
        self.dispatch = _Dispatch(hosts)
        #: The staging areas of the session's hosts (``send``, ``Staged`` inputs).
        self.staging = staging
        self.runners = [_HostRunner(i, h, settings, blob, self.dispatch, options, staging)
                        for i, h in enumerate(hosts)]
        self._outstanding = 0
        for runner in self.runners:
            runner.start()

    @property
    def in_flight(self) -> int:
        return self._outstanding

    def submit(self, chunk: Chunk) -> None:
        self._outstanding += 1
        self.dispatch.put(chunk)

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        if not self._outstanding:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[ChunkResult] = []
        while not results:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                break
            try:
                item = self.dispatch.results.get(timeout=left)
            except queue.Empty:
                if not any(r.is_alive() for r in self.runners):
                    results += self._orphans()
                continue
            if item is None:  # wake()
                break
            if isinstance(item, BaseException):
                raise item
            results.append(item)
        while True:  # and whatever else is already there
            try:
                item = self.dispatch.results.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                results.append(item)
        self._outstanding -= len(results)
        return results

    def wake(self) -> None:
        self.dispatch.results.put(None)

    def _orphans(self) -> list[ChunkResult]:
        """Every host is gone: a failure for each chunk left, or the reason if nothing ran."""
        errors = [r.error for r in self.runners if r.error is not None]
        if not any(r.chunks_done for r in self.runners) and errors:
            raise errors[0]  # nothing ran anywhere: the reason is the answer
        why = "; ".join(f"{r.host}: {r.error}" for r in self.runners if r.error is not None)
        results = [lost_chunk_result(chunk, f"could not run: no SSH host left ({why})",
                                     kind="lost", host=self.runners[0].host)
                   for chunk in self.dispatch.queued()]
        for result in results:
            result.failures += self.dispatch.pending.pop(result.chunk_id, [])
        return results

    def close(self) -> None:
        if self._outstanding or sys.exc_info()[0] is not None:
            self.dispatch.keep_hosts = False
        self.dispatch.close()
        for runner in self.runners:
            runner.join(timeout=10)
