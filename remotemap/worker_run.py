"""What a worker does in its run directory: load the sealed function and chunks, run the
tasks, write each chunk's sealed outcome.

``remotemap.worker`` (the program, ``python -m remotemap.worker``) calls this for both of its
commands: its ``run`` command runs chunks here one after the other (:func:`run_chunks`), its
fork server runs :func:`execute_chunk` in one child per chunk. Like the worker, this module
imports only the standard library, cloudpickle and remotemap's layer-1 modules
(``tests/test_layers_worker.py`` holds it to that list).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from remotemap.capture import merge_outputs
from remotemap.chunk_packs import PackReader
from remotemap.execution import (
    PICKLING_ERRORS,
    chunk_failed,
    dumps_result,
    failure_from_exception,
    run_chunk,
)
from remotemap.leftovers import Stdio, become_subreaper, kill_children
from remotemap.protocol import (
    FUNCTION,
    RunLayout,
    chunk_name,
    decode_chunk_header,
    outcome_name,
    read_sealed,
    seal_parts,
    set_worker_key,
    unseal_file,
    write_outcome_parts,
)
from remotemap.rundir import LocalRunDir
from remotemap.tasks import Chunk, ChunkResult

#: A task function, as the worker loads it.
Function = Callable[..., Any]


class WorkerRun:
    """The run directory this worker serves, and the run's key."""

    def __init__(self, rundir: LocalRunDir, key: bytes) -> None:
        self.rundir = rundir
        self.key = key
        self.layout = RunLayout(rundir.root)
        set_worker_key(key)  # for workflow steps reading their prerequisites' outcomes
        self._packs: PackReader | None = None

    def load(self, name: str) -> bytes:
        """The checked content of the sealed file ``name``: FileNotFoundError, TamperedFile."""
        return read_sealed(self.rundir, self.key, name)

    def load_chunk(self, chunk_id: int) -> bytes:
        """The checked content of chunk file ``chunk_id``, on its own or in a pack
        (``chunk_packs``): FileNotFoundError, TamperedFile."""
        name = chunk_name(chunk_id)
        try:
            return self.load(name)
        except FileNotFoundError:
            if self._packs is None:
                self._packs = PackReader(self.rundir)
            found = self._packs.find(chunk_id)
            if found is None:
                raise
        pack, blob = found
        return bytes(unseal_file(self.key, name, blob, self.rundir.path(pack)))


def load_function(run: WorkerRun) -> Function:
    function: Function = cloudpickle.loads(run.load(FUNCTION))
    return function


def execute_chunk(
    run: WorkerRun, chunk_id: int, function: Function | None, task_dirs: bool = False,
    data: bytes | None = None,
) -> bool:
    """Run one chunk and write its outcome; any failure becomes a failed task, never silence.
    True when every task succeeded. ``data``: the chunk file's content, already checked
    (``WorkerRun.load``) by the fork server; None to read it here."""
    if data is None:
        data = run.load_chunk(chunk_id)
    token, _, indices, arguments, options = decode_chunk_header(data)
    try:
        if function is None:
            function = load_function(run)
        largs, lkwargs = arguments()
    except PICKLING_ERRORS as exc:  # a SystemExit from a __reduce__ fails the tasks too
        # The function or the arguments cannot be loaded here (a module missing on this host,
        # say): every task of the chunk fails with the reason, not the worker without a word.
        result = chunk_failed(Chunk(chunk_id, indices, [], []), exc)
    else:
        runner = run_in_task_dirs if task_dirs else _run_here
        result = runner(run, function, Chunk(chunk_id, indices, largs, lkwargs))
    spill = bool(options.get("outcome_buffers"))
    return write_outcome(run, token, result, spill) and not result.failures


def write_outcome(run: WorkerRun, token: str, result: ChunkResult, spill: bool = False) -> bool:
    """Write the chunk's sealed outcome; False when it could not be (a full disk, the run
    directory removed) and a small one went instead, in which each task fails naming the path
    and the reason. If even that cannot be written, the error goes up (the process then exits
    with status 70). ``spill``: large buffers as files beside it (``write_outcome_parts``)."""
    name = outcome_name(result.chunk_id)
    try:
        if spill:
            parts = write_outcome_parts(run.rundir, run.key, result, token)
        else:
            parts = seal_parts(run.key, name, dumps_result(result, token))
        run.rundir.write(name, *parts)
        return True
    except OSError as exc:
        error = exc
    path = run.layout.outcome(result.chunk_id)
    indices = sorted([*result.indices, *(f.index for f in result.failures)])
    with contextlib.suppress(Exception):  # the log may be on the same full disk
        print(f"remotemap worker: cannot write {path}: {error}", file=sys.stderr, flush=True)
    failures = []
    for index in indices:
        failure = failure_from_exception(index, error, kind="lost")
        failures.append(dataclasses.replace(
            failure, message=f"the outcome of task {index} could not be written to {path}: "
                             f"{error}"))
    small = dumps_result(ChunkResult(result.chunk_id, failures=failures), token)
    run.rundir.write(name, *seal_parts(run.key, name, small))
    return False


def _run_here(run: WorkerRun, function: Function, chunk: Chunk) -> ChunkResult:
    return run_chunk(function, chunk)


def run_in_task_dirs(run: WorkerRun, function: Function, chunk: Chunk) -> ChunkResult:
    """Run each task in its own working directory, ``RUN/work/INDEX``, so the files it writes
    can be found (and copied back) afterwards."""
    indices: list[int] = []  # the result's, gathered here
    result = ChunkResult(chunk.id, indices)
    for index, args, kwargs in zip(chunk.indices, chunk.largs, chunk.lkwargs, strict=True):
        workdir = run.layout.name(run.layout.workdir(index))
        run.rundir.makedirs(workdir)
        run.rundir.chdir(workdir)
        one = run_chunk(function, Chunk(chunk.id, [index], [args], [kwargs]))
        indices += one.indices
        result.values += one.values
        result.failures += one.failures
        result.timings.update(one.task_times())
        result.worker = one.worker
        merge_outputs(result, one)
    return result


@contextlib.contextmanager
def chunk_runner(run: WorkerRun) -> Iterator[Callable[[int], bool]]:
    """Set this process up to run ``run``'s chunks one after the other, and yield the function
    that runs one (True when every task succeeded). The function is loaded once; a load error
    is reported against each task. What a chunk's tasks leave behind (child processes, stdout
    or stderr closed) is undone before the next chunk, and the children are killed at the end."""
    function: Function | None
    try:
        function = load_function(run)
    except Exception:
        function = None  # execute_chunk reports the error against each task
    become_subreaper()
    stdio = Stdio()

    def run_one(chunk_id: int) -> bool:
        try:
            return execute_chunk(run, chunk_id, function)
        finally:
            kill_children()
            stdio.repair()

    try:
        yield run_one
    finally:
        stdio.close()


def run_chunks(run: WorkerRun, chunk_ids: list[int]) -> bool:
    """Run the chunks here, one after the other (:func:`chunk_runner`); True when every task
    succeeded."""
    ok = True
    with chunk_runner(run) as run_one:
        for chunk_id in chunk_ids:
            ok = run_one(chunk_id) and ok
    return ok
