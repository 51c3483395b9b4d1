"""``local``: joblib worker processes on this machine, tasks grouped into chunks.

Chunking is what keeps tiny tasks cheap: joblib pays its dispatch cost once per chunk instead
of once per task. The function is pickled once per run and cached in each worker.

A task that kills its worker process breaks joblib's whole pool. Then every task not yet
finished is run again, each alone in its own process (the ``local_with_dumps`` machinery), so
the task that crashes fails by itself with its exit code or signal and the others complete.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from remotemap.backends.base import Backend
from remotemap.backends.dumps import DumpsBackend, pickle_function
from remotemap.config import resolve_n_jobs
from remotemap.execution import chunk_failed, dumps_result, find_unpicklable, loads, run_chunk
from remotemap.protocol import new_token
from remotemap.tasks import Chunk, ChunkResult, Results, auto_chunksize

log = logging.getLogger("remotemap")

# Worker-side cache: the function of the current run, unpickled once per worker process.
_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _run_in_worker(token: str, blob: bytes, sys_path: list[str], chunk: Chunk) -> bytes:
    function = _FUNCTIONS.get(token)
    if function is None:
        _FUNCTIONS.clear()  # one run at a time: do not keep old runs' functions alive
        # joblib's workers outlive a run; the caller's sys.path may have grown since they
        # started (a notebook's sys.path.append), and the function may need it to load.
        sys.path[:0] = [p for p in sys_path if p not in sys.path]
        try:
            function = _FUNCTIONS[token] = loads(blob)
        except Exception as exc:
            return dumps_result(chunk_failed(chunk, exc))
    return dumps_result(run_chunk(function, chunk))


class LocalBackend(Backend):
    name = "local"

    @property
    def n_jobs(self) -> int:
        return resolve_n_jobs(self.settings.get("n_jobs", 0))

    def chunksize(self, n_tasks: int) -> int:
        return int(self.settings.get("chunksize") or auto_chunksize(n_tasks, self.n_jobs))

    def run(self, function: Callable[..., Any], chunks: Iterable[Chunk]) -> Results:
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        blob = pickle_function(function)
        token = new_token()
        source = iter(chunks)
        retry: list[Chunk] = []
        while True:
            pending: dict[int, Chunk] = {}
            try:
                for result in self._round(token, blob, itertools.chain(retry, source), pending):
                    del pending[result.chunk_id]
                    yield result
                return
            except TerminatedWorkerError as exc:
                log.warning(
                    "a local worker process died (%s); rerunning the unfinished tasks "
                    "one process each to find the one that crashed",
                    str(exc).split("The exit codes of the workers are ")[-1].split("\n")[0],
                )
                yield from self._isolated(function, itertools.chain(pending.values(), source))
                return
            except pickle.PicklingError:
                retry = []
                found = False
                for chunk in pending.values():
                    keep, failures = find_unpicklable(chunk)
                    found = found or bool(failures)
                    if failures:
                        yield ChunkResult(chunk.id, failures=failures)
                    if keep.indices:
                        retry.append(keep)
                if not found:
                    raise

    def _round(
        self, token: str, blob: bytes, chunks: Iterable[Chunk], pending: dict[int, Chunk]
    ) -> Results:
        from joblib import Parallel, delayed

        def calls() -> Iterator[Any]:
            for chunk in chunks:
                pending[chunk.id] = chunk
                yield delayed(_run_in_worker)(token, blob, sys_path, chunk)

        sys_path = list(sys.path)
        parallel = Parallel(n_jobs=self.n_jobs, return_as="generator_unordered", batch_size=1)
        outputs = parallel(calls())
        try:
            for data in outputs:
                result = loads(data)
                assert isinstance(result, ChunkResult)
                yield result
        finally:
            with warnings.catch_warnings():
                # Leaving early (fail fast, Ctrl-C) cancels the rest: that is the point, so
                # joblib's warning about cancelled tasks would only alarm.
                warnings.simplefilter("ignore", UserWarning)
                outputs.close()

    def _isolated(
        self, function: Callable[..., Any], chunks: Iterable[Chunk]
    ) -> Results:
        singles = (
            Chunk(n, [index], [args], [kwargs])
            for n, (index, args, kwargs) in enumerate(
                (i, a, k)
                for chunk in chunks
                for i, a, k in zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True)
            )
        )
        dumps = DumpsBackend({"n_jobs": self.settings.get("n_jobs", 0)})
        yield from dumps.run(function, singles)
