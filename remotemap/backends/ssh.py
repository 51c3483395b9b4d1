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
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from remotemap.backends.base import Backend
from remotemap.backends.dumps import pickle_function
from remotemap.backends.remote_files import RemoteRun, fetch_task_files
from remotemap.errors import ConfigError
from remotemap.execution import lost_chunk_result
from remotemap.server_client import WorkerServerGone
from remotemap.tasks import Chunk, ChunkResult, Results, auto_chunksize

log = logging.getLogger("remotemap")

#: How many times a chunk may lose its host (connection dropped) before it fails as ``lost``.
MAX_ATTEMPTS = 3
#: How many times a host thread reconnects after its connection dropped.
RECONNECTS = 2


class _Dispatch:
    """The chunks of a run, shared by the host threads, with an account of each one."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self._source: Iterator[Chunk] | None = iter(chunks)
        self._returned: collections.deque[Chunk] = collections.deque()
        self._lock = threading.Lock()
        self._attempts: collections.Counter[int] = collections.Counter()
        self.in_flight = 0
        self.results: queue.Queue[ChunkResult | BaseException] = queue.Queue()
        self.stop = threading.Event()

    def take(self) -> Chunk | None:
        with self._lock:
            chunk = self._returned.popleft() if self._returned else None
            if chunk is None and self._source is not None:
                chunk = next(self._source, None)
                if chunk is None:
                    self._source = None
            if chunk is not None:
                self.in_flight += 1
            return chunk

    def done(self, result: ChunkResult) -> None:
        with self._lock:
            self.in_flight -= 1
        self.results.put(result)

    def give_back(self, chunks: Iterable[Chunk], why: str, host: str) -> None:
        for chunk in chunks:
            with self._lock:
                self._attempts[chunk.id] += 1
                give_up = self._attempts[chunk.id] >= MAX_ATTEMPTS
                if not give_up:
                    self.in_flight -= 1
                    self._returned.append(chunk)
            if give_up:
                self.done(lost_chunk_result(chunk, f"was lost {MAX_ATTEMPTS} times ({why})",
                                            kind="lost", host=host))

    def finished(self) -> bool:
        with self._lock:
            return self._source is None and not self._returned and self.in_flight == 0


class _HostRunner(threading.Thread):
    """Runs chunks on one host until the queue is empty, reconnecting if the link drops."""

    def __init__(self, host: str, settings: Mapping[str, Any], blob: bytes,
                 dispatch: _Dispatch) -> None:
        super().__init__(name=f"remotemap-ssh-{host}", daemon=True)
        self.host = host
        self.settings = settings
        self.blob = blob
        self.dispatch = dispatch
        self.error: BaseException | None = None
        self.chunks_done = 0

    def run(self) -> None:
        from remotemap.ssh import AuthenticationFailed, HostKeyError, SSHError

        drops = 0
        while not self.dispatch.stop.is_set() and not self.dispatch.finished():
            in_flight: dict[int, Chunk] = {}
            try:
                with RemoteRun(self.host, self.settings, self.blob) as remote:
                    self._serve(remote, in_flight)
                return
            except (HostKeyError, AuthenticationFailed) as exc:
                self.error = exc  # no retry can fix these, and no other host should cover
                self.dispatch.results.put(exc)
                return
            except (SSHError, WorkerServerGone, OSError, EOFError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                self.dispatch.give_back(in_flight.values(), why, self.host)
                drops += 1
                if self.chunks_done == 0 and drops == 1 and not in_flight:
                    self.error = exc  # never got going: let the others carry on
                    log.warning("ssh host %s is not usable, the run goes on without it: %s",
                                self.host, exc)
                    return
                if drops > RECONNECTS:
                    self.error = exc
                    log.warning("ssh host %s dropped %d times; giving it up: %s",
                                self.host, drops, exc)
                    return
                log.warning("connection to %s lost (%s); %d unfinished chunk(s) go back to the "
                            "queue; reconnecting", self.host, exc, len(in_flight))
                time.sleep(0.2 * drops)
            except BaseException as exc:
                self.error = exc
                self.dispatch.give_back(in_flight.values(), repr(exc), self.host)
                self.dispatch.results.put(exc)
                return

    def _serve(self, remote: RemoteRun, in_flight: dict[int, Chunk]) -> None:
        slots = remote.slots
        while not self.dispatch.stop.is_set():
            while len(in_flight) < slots:
                chunk = self.dispatch.take()
                if chunk is None:
                    break
                in_flight[chunk.id] = chunk
                failed = remote.stage(chunk)
                if failed is not None:
                    self.dispatch.done(failed)
                    del in_flight[chunk.id]
            if not in_flight:
                if self.dispatch.finished():
                    return
                time.sleep(0.05)  # another host may yet give chunks back
                continue
            done = remote.next_done(timeout=0.5)
            if done is None:
                continue
            chunk_id, status = done
            chunk = in_flight[chunk_id]
            result = remote.collect(chunk, status)
            if status == "exit:0" and self.settings.get("fetch"):
                fetch_task_files(remote, chunk, result, self.settings)
            del in_flight[chunk_id]
            self.chunks_done += 1
            self.dispatch.done(result)


class SSHBackend(Backend):
    name = "ssh"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import paramiko  # noqa: F401
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

    def run(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        hosts = self.hosts
        blob = pickle_function(function)
        dispatch = _Dispatch(chunks)
        runners = [_HostRunner(host, self.settings, blob, dispatch) for host in hosts]
        for runner in runners:
            runner.start()
        try:
            while not dispatch.finished():
                try:
                    item = dispatch.results.get(timeout=0.1)
                except queue.Empty:
                    if not any(r.is_alive() for r in runners):
                        yield from self._orphans(dispatch, runners)
                        return
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
            while not dispatch.results.empty():
                item = dispatch.results.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            dispatch.stop.set()
            for runner in runners:
                runner.join(timeout=10)

    @staticmethod
    def _orphans(dispatch: _Dispatch, runners: list[_HostRunner]) -> Results:
        """Every host is gone: what they finished, then a failure for each chunk left."""
        while not dispatch.results.empty():
            item = dispatch.results.get()
            if isinstance(item, BaseException):
                raise item
            yield item
        errors = [r.error for r in runners if r.error is not None]
        if not any(r.chunks_done for r in runners) and errors:
            raise errors[0]  # nothing ran anywhere: the reason is the answer
        why = "; ".join(f"{r.host}: {r.error}" for r in runners if r.error is not None)
        while (chunk := dispatch.take()) is not None:
            yield lost_chunk_result(chunk, f"could not run: no SSH host left ({why})",
                                    kind="lost", host=runners[0].host)
