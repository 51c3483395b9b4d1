"""``dask``: tasks on the workers of a running ``dask.distributed`` scheduler.

The caller connects a ``distributed.Client`` to the address in ``[dask] scheduler`` and sends
each chunk as one dask task (:func:`remotemap.backends.dask_worker.run_task`), which runs it in
a child process of the dask worker: see that module for why, and for how a dask worker lost
mid-chunk turns into failures rather than a silent re-run. The function is cloudpickled once
(``execution.pickle_function``), and scattered to every worker when large; each chunk's
arguments are cloudpickled in the caller, so lambdas, ``__main__`` functions and their
arguments travel as in every mode.

Declared in remotemap's own ``pyproject.toml`` under the entry-point group
``remotemap.backends``, as a plug-in would be, so that path is exercised by every install.
This module imports neither dask nor distributed at import time: checking a config file loads
the class for its ``config_section``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import queue
import sys
from collections.abc import Callable, Mapping
from typing import Any

from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.backends.dask_options import DASK
from remotemap.backends.dask_worker import run_task
from remotemap.capture import merge_outputs
from remotemap.config import config_path
from remotemap.errors import BackendUnavailable, ConfigError
from remotemap.execution import (
    PICKLING_ERRORS,
    dumps,
    failure_from_exception,
    find_unpicklable,
    loads_result,
    pickle_function,
)
from remotemap.protocol import new_token
from remotemap.tasks import Chunk, ChunkResult, auto_chunksize

#: Arguments of a chunk above this many bytes are scattered rather than put in the task.
LARGE = 1 << 20


class DaskBackend(Backend):
    name = "dask"
    config_section = DASK

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self._client: Any = None  # connected by chunksize or open; the session then owns it

    @classmethod
    def unavailable_reason(cls, settings: Mapping[str, Any]) -> str | None:
        missing = [m for m in ("dask", "distributed") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{' and '.join(missing)} not installed here: "
                    "pip install 'remotemap[dask]'")
        return None

    @property
    def address(self) -> str:
        address = str(self.settings.get("scheduler") or "")
        if not address:
            path, _ = config_path()
            raise ConfigError(
                "mode 'dask' needs the address of a running dask scheduler: set dask.scheduler "
                "in this config file (remotemap config set dask.scheduler "
                "tcp://HOST:8786) or pass scheduler='tcp://HOST:8786'", path=path,
                key="dask.scheduler")
        return address

    def connect(self) -> Any:
        """A ``distributed.Client`` of the scheduler; BackendUnavailable naming the address
        when it cannot be reached within ``connect_timeout``."""
        if self._client is None:
            from distributed import Client

            address = self.address
            timeout = float(self.settings.get("connect_timeout", 10.0))
            try:
                self._client = Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise BackendUnavailable(
                    f"mode 'dask': cannot reach the dask scheduler at {address} "
                    f"(dask.scheduler) within {timeout:g} s: {exc}") from exc
        return self._client

    @property
    def n_jobs(self) -> int:
        n_jobs = int(self.settings.get("n_jobs") or 0)
        if n_jobs:
            return n_jobs
        # The cluster's threads now: workers that join later get chunks too, through dask.
        threads: dict[str, int] = self.connect().nthreads()
        return max(1, sum(threads.values()))

    def chunksize(self, n_tasks: int) -> int:
        return int(self.settings.get("chunksize") or auto_chunksize(n_tasks, self.n_jobs))

    def open(self, function: Callable[..., Any], options: TaskOptions) -> DaskSession:
        blob = pickle_function(function)
        n_jobs = self.n_jobs
        client, self._client = self.connect(), None
        return DaskSession(client, blob, options, n_jobs, self.address)


class DaskSession(Session):
    def __init__(self, client: Any, blob: bytes, options: TaskOptions, n_jobs: int,
                 address: str) -> None:
        self.client = client
        self.address = address  # the scheduler's: where a chunk that dask lost was
        self.options = options
        # Two chunks per thread in flight: a dask worker never waits for the next one.
        self.capacity = 2 * n_jobs
        self.token = new_token()
        self.sys_path = list(sys.path)
        self.numbers = itertools.count()
        # A small function goes with each chunk: nothing to lose with a worker. A large one
        # (a closure over an array) goes to every worker once, so that one dying loses no copy
        # the next chunks need.
        self.blob: Any = (client.scatter(blob, hash=False, broadcast=True) if len(blob) > LARGE
                          else blob)
        self.futures: dict[str, tuple[Any, Chunk]] = {}  # dask key -> (future, chunk)
        self.done: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.ready: list[ChunkResult] = []
        self.closed = False

    @property
    def in_flight(self) -> int:
        return len(self.futures) + len(self.ready)

    def submit(self, chunk: Chunk) -> None:
        arguments: Any
        try:
            arguments = dumps((chunk.largs, chunk.lkwargs))
        except PICKLING_ERRORS:
            keep, failures = find_unpicklable(chunk)
            self.ready.append(ChunkResult(chunk.id, failures=failures))
            if not keep.indices:
                return
            chunk, arguments = keep, dumps((keep.largs, keep.lkwargs))
        # The key is also the name of the chunk's started-marker (see dask_worker).
        key = f"remotemap-{self.token}-{chunk.id}-{next(self.numbers)}"
        if len(arguments) > LARGE:  # as data beside the task, not inside its graph
            arguments = self.client.scatter(arguments, hash=False)
        future = self.client.submit(
            run_task, key, chunk.id, list(chunk.indices), self.blob, arguments, self.sys_path,
            self.options.timeout, dict(self.options.env), key=key, pure=False, retries=0)
        self.futures[key] = (future, chunk)
        future.add_done_callback(lambda f: self.done.put(f.key))

    def wait(self, timeout: float | None = None) -> list[ChunkResult]:
        results, self.ready = self.ready, []
        if results or not self.futures:
            return results
        try:
            keys = [self.done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self.done.empty():
            keys.append(self.done.get())
        for key in keys:
            entry = self.futures.pop(key, None) if key is not None else None  # None: wake()
            if key is not None and entry is not None:
                results.append(self._result(key, *entry))
        return results

    def _result(self, key: str, future: Any, chunk: Chunk) -> ChunkResult:
        from distributed import Event

        try:
            indices: list[int] = []  # the result's, gathered here
            result = ChunkResult(chunk.id, indices)
            for data in future.result():  # one result, or one per task run again alone
                part = loads_result(data)[1]
                indices += part.indices
                result.values += part.values
                result.failures += part.failures
                result.timings.update(part.task_times())
                result.worker = part.worker
                merge_outputs(result, part)
        except Exception as exc:  # not the tasks' (they fail in the child): dask's own
            # KilledWorker, a cancelled future (scheduler gone), a worker without remotemap.
            result = ChunkResult(chunk.id, failures=[
                failure_from_exception(i, exc, kind="lost", host=self.address)
                for i in chunk.indices])
        future.release()
        with contextlib.suppress(Exception):  # the scheduler may be gone: nothing to clean
            Event(key, client=self.client).clear()
        return result

    def wake(self) -> None:
        self.done.put(None)

    def close(self) -> None:
        from distributed import Event

        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # closing must not fail over a lost scheduler
            # Queued chunks never start; running ones see their key released and kill
            # their child process (dask_worker watches for it).
            self.client.cancel([f for f, _ in self.futures.values()], force=True)
            for key in self.futures:
                Event(key, client=self.client).clear()
        self.futures.clear()
        self.ready = []
        with contextlib.suppress(Exception):
            self.client.close()
