"""``local``: joblib's worker processes (its loky executor) on this machine, tasks in chunks.

Chunking is what keeps tiny tasks cheap: the dispatch cost is paid once per chunk instead of
once per task. The function is pickled once per run and cached in each worker. The executor is
driven through its futures rather than ``joblib.Parallel``, whose result loop polls every
10 ms: on a run of many tiny tasks that sleep costs more than the tasks.

A task that kills its worker process breaks the whole pool. Then every task not yet finished
runs again, each alone in its own process (the ``local_with_dumps`` machinery), so the task
that crashes fails by itself with its exit code or signal and the others complete.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from remotemap.backends.base import Backend
from remotemap.backends.dumps import DumpsBackend, pickle_function
from remotemap.buffers import BufferSpill, PackedChunk, unpack
from remotemap.config import resolve_n_jobs
from remotemap.execution import chunk_failed, dumps_result, find_unpicklable, loads, run_chunk
from remotemap.protocol import new_token
from remotemap.tasks import Chunk, ChunkResult, Results, auto_chunksize

log = logging.getLogger("remotemap")

# Worker-side cache: the function of the current run, unpickled once per worker process.
_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _run_in_worker(token: str, blob: bytes, sys_path: list[str], packed: PackedChunk) -> bytes:
    function = _FUNCTIONS.get(token)
    try:
        if function is None:
            _FUNCTIONS.clear()  # one run at a time: do not keep old runs' functions alive
            # Workers outlive a run; the caller's sys.path may have grown since they started
            # (a notebook's sys.path.append), and the function may need it to load.
            sys.path[:0] = [p for p in sys_path if p not in sys.path]
            function = _FUNCTIONS[token] = loads(blob)
        chunk = unpack(packed)
    except Exception as exc:
        return dumps_result(chunk_failed(Chunk(packed.id, packed.indices, [], []), exc))
    return dumps_result(run_chunk(function, chunk))


class LocalBackend(Backend):
    name = "local"

    @property
    def n_jobs(self) -> int:
        return resolve_n_jobs(self.settings.get("n_jobs", 0))

    def chunksize(self, n_tasks: int) -> int:
        return int(self.settings.get("chunksize") or auto_chunksize(n_tasks, self.n_jobs))

    def run(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        from joblib.externals.loky import get_reusable_executor

        blob = pickle_function(function)
        token, sys_path, n_jobs = new_token(), list(sys.path), self.n_jobs
        executor = get_reusable_executor(max_workers=n_jobs)
        spill = BufferSpill()
        source = iter(chunks)
        in_flight: dict[Future[bytes], Chunk] = {}
        unfinished: list[Chunk] = []  # chunks whose worker died under them
        try:
            while True:
                # Two chunks per worker in flight: a worker never waits for the next one.
                while len(in_flight) < 2 * n_jobs and not unfinished:
                    chunk = next(source, None)
                    if chunk is None:
                        break
                    packed, failed = self._pack(spill, chunk)
                    if failed is not None:
                        yield failed
                    if packed is not None:
                        future = executor.submit(_run_in_worker, token, blob, sys_path, packed)
                        in_flight[future] = chunk
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = in_flight.pop(future)
                    spill.release(chunk.id)
                    try:
                        data = future.result()
                    except BrokenProcessPool as exc:
                        if not unfinished:
                            log.warning("a local worker process died (%s); the unfinished tasks "
                                        "run again, one process each", _exit_codes(exc))
                        unfinished.append(chunk)
                        continue
                    yield loads(data)
        finally:
            if in_flight:  # leaving early (fail fast, Ctrl-C): stop what is still running
                for future in in_flight:
                    future.cancel()
                executor.shutdown(wait=False, kill_workers=True)
            spill.close()
        if unfinished:
            yield from self._isolated(function, itertools.chain(unfinished, source))

    @staticmethod
    def _pack(spill: BufferSpill, chunk: Chunk) -> tuple[PackedChunk | None, ChunkResult | None]:
        """The packed chunk; tasks whose arguments cannot be pickled fail here, alone."""
        try:
            return spill.pack(chunk), None
        except Exception:
            keep, failures = find_unpicklable(chunk)
            failed = ChunkResult(chunk.id, failures=failures)
            return (spill.pack(keep) if keep.indices else None), failed

    def _isolated(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        tasks = ((i, a, k) for chunk in chunks
                 for i, a, k in zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True))
        singles: Iterator[Chunk] = (Chunk(n, [i], [a], [k]) for n, (i, a, k) in enumerate(tasks))
        dumps = DumpsBackend({"n_jobs": self.settings.get("n_jobs", 0)})
        yield from dumps.run(function, singles)


def _exit_codes(exc: BaseException) -> str:
    text = str(exc)
    marker = "The exit codes of the workers are "
    return text.split(marker)[-1].split("\n")[0] if marker in text else type(exc).__name__
