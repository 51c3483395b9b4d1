"""``local``'s worker processes, each reading chunks from a pipe of its own that the caller
writes, and answering on it in order.

loky starts the processes (fork+exec: safe whatever threads the caller runs, and the
environment is set before the worker imports anything), but its executor no longer carries the
chunks. It handed each one from the caller's thread to a manager thread, then to a feeder
thread, then through one pipe all workers share, and each result back through the manager
thread. On 2 cores those hops cost about 1 ms a chunk, and the manager thread's first wake-up
in a call kept the caller off the GIL for 2-4 ms (``benchmarks/ab.py tiny``). Here the caller
writes each chunk to a worker's pipe itself and waits on the pipes and the processes'
sentinels: no thread in between, and a worker that dies is seen at once, with its exit code.

A chunk is queued behind a busy worker's current one only when it is small: the caller writes
while the worker may be writing a large result back, and two blocked writers would wait on each
other. A larger chunk waits in the caller until a worker is free.

A pool outlives its call, as loky's reusable executor does: the next call with the same worker
count and environment takes it back (workers started, functions and imports warm). A worker with
nothing to do for ``IDLE_TIMEOUT`` seconds exits, and one whose caller is gone exits too.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pickle import loads
from typing import Any

#: Seconds a worker waits for a chunk before it exits (loky's reusable executor keeps 300).
IDLE_TIMEOUT = 300.0
#: The largest chunk queued behind a busy worker's chunk: well under what a socket pair buffers
#: (~200 KB), so writing it never blocks on a worker that is itself writing a result.
QUEUE_AHEAD_BYTES = 64 * 1024
#: Seconds a closed pool's idle workers get to exit on their own before they are killed.
_EXIT_GRACE = 1.0


def serve(conn: Connection, run: Callable[..., bytes], initializer: Callable[[], None],
          idle_timeout: float = IDLE_TIMEOUT) -> None:
    """A worker's life: for each pickled argument tuple the caller sends, ``run(*args)``,
    and send back the bytes it returns. Ends when the caller closes the pipe, or after
    ``idle_timeout`` seconds without a chunk.

    Ctrl-C in a terminal reaches every process of the group: an idle worker ignores it (the
    caller decides what stops), a running task gets it as the task's own failure.
    """
    initializer()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send_bytes(b"")  # ready: started, imported, initialized (see WorkerPool.ready)
    except OSError:  # the pool was shut while this worker started
        return
    while True:
        try:
            if not conn.poll(idle_timeout):
                return
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            answer = run(*loads(data))
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        conn.send_bytes(answer)


@dataclass
class _Worker:
    process: Any  # loky's process object
    conn: Connection
    #: What was sent to it and not answered yet, oldest first: it answers in that order.
    jobs: deque[Any] = field(default_factory=deque)
    #: It said it is ready (its first message, before any answer).
    ready: bool = False


@dataclass
class Died:
    """A worker that ended with chunks unanswered."""

    jobs: list[Any]
    status: str  # "exit:N" or "signal:NAME"


class WorkerPool:
    """Up to ``n_workers`` processes running :func:`serve` with ``run``, ``initializer`` and
    ``idle_timeout``, started at the first :meth:`send` (and again when one has ended)."""

    def __init__(self, n_workers: int, env: Mapping[str, str], run: Callable[..., bytes],
                 initializer: Callable[[], None], idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.n_workers = max(1, n_workers)
        self.idle_timeout = idle_timeout
        self.env = dict(env)
        self.run, self.initializer = run, initializer
        self.workers: list[_Worker] = []
        _ALL.add(self)

    @property
    def key(self) -> tuple[Any, ...]:
        return pool_key(self.n_workers, self.env, self.run, self.initializer)

    @property
    def busy(self) -> int:
        return sum(len(worker.jobs) for worker in self.workers)

    def send(self, data: bytes, job: Any) -> bool:
        """Send ``data`` (a pickled argument tuple for ``run``) to the worker with the fewest
        chunks, starting workers as needed; False when every worker is busy and ``data`` is
        too large to queue behind a chunk (send it after a result came back)."""
        self.start()
        while True:
            worker = min(self.workers, key=lambda w: len(w.jobs))
            if worker.jobs and len(data) > QUEUE_AHEAD_BYTES:
                return False
            try:
                worker.conn.send_bytes(data)
            except OSError:  # it ended while idle (its idle time ran out, or it was killed)
                self._drop(worker)
                self.workers.append(self._start())
                continue
            except BaseException:  # Ctrl-C mid-write: the worker may hold half a message
                _kill(worker.process)
                self._drop(worker)
                raise
            worker.jobs.append(job)
            return True

    def ready(self) -> bool:
        """Whether every worker is started and said it is ready (none is importing still);
        False with none started."""
        for worker in list(self.workers):
            try:
                if not worker.ready and worker.conn.poll(0):
                    worker.ready = worker.conn.recv_bytes() == b""
            except (EOFError, OSError):  # it ended: replaced at the next send
                self._drop(worker)
        return bool(self.workers) and all(worker.ready for worker in self.workers)

    def start(self) -> None:
        """Start the workers not running yet (they start too at the first :meth:`send`)."""
        while len(self.workers) < self.n_workers:
            self.workers.append(self._start())

    def wait(self, timeout: float | None, also: list[Any]) -> tuple[list[tuple[Any, bytes]],
                                                                    list[Died]]:
        """Wait up to ``timeout`` seconds for a result or for one of ``also`` (file
        descriptors or connections) to be ready; the answers that came, with their jobs, and
        the workers that died with jobs unanswered (they are replaced at the next send)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = [worker for worker in self.workers if worker.jobs]
            watched = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            readable = set(wait(watched + also, timeout))
            answers, died = self._gather(busy, readable)
            if answers or died or not readable or not readable.isdisjoint(also):
                return answers, died
            # Only a worker saying it is ready (its first message): wait on for the rest.
            if deadline is not None:
                timeout = max(deadline - time.monotonic(), 0.0)

    def _gather(self, busy: list[_Worker], readable: set[Any]
                ) -> tuple[list[tuple[Any, bytes]], list[Died]]:
        answers: list[tuple[Any, bytes]] = []
        died: list[Died] = []
        for worker in busy:
            if worker.conn not in readable and worker.process.sentinel not in readable:
                continue
            ended = _read(worker, answers)
            if ended or worker.process.sentinel in readable:
                jobs, status = list(worker.jobs), self._drop(worker)
                if jobs:
                    died.append(Died(jobs, status))
        return answers, died

    def kill_busy(self) -> None:
        """Kill the workers running or holding chunks (a call left early); idle ones stay."""
        for worker in [w for w in self.workers if w.jobs]:
            _kill(worker.process)
            self._drop(worker)

    def shutdown(self) -> None:
        """Close every worker: idle ones exit as their pipe closes; the others are killed."""
        for worker in self.workers:
            worker.conn.close()
        for worker in self.workers:
            worker.process.join(_EXIT_GRACE if not worker.jobs else 0)
            if worker.process.exitcode is None:
                _kill(worker.process)
        self.workers = []

    def _start(self) -> _Worker:
        from loky.backend.context import get_context

        context = get_context("loky")
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(target=serve, env=self.env, args=(
            theirs, self.run, self.initializer, self.idle_timeout))
        process.start()
        theirs.close()  # the worker's end lives in the worker only: its exit closes the pipe
        return _Worker(process, ours)

    def _drop(self, worker: _Worker) -> str:
        """Forget a worker that ended (reaping it); how it ended."""
        self.workers.remove(worker)
        worker.conn.close()
        worker.process.join(5)
        code = worker.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"signal:{signal.Signals(-code).name}"
        return f"exit:{code}"


def _read(worker: _Worker, answers: list[tuple[Any, bytes]]) -> bool:
    """Read the answers ``worker`` has sent so far into ``answers``; whether its pipe ended."""
    try:
        while worker.jobs and worker.conn.poll(0):
            data = worker.conn.recv_bytes()
            if not worker.ready:  # the first message: it says it is ready
                worker.ready = True
                continue
            answers.append((worker.jobs[0], data))
            worker.jobs.popleft()
        return not worker.jobs and worker.conn.poll(0)  # idle, yet readable: the end
    except (EOFError, OSError):
        return True


def _kill(process: Any) -> None:
    """Kill a worker and what its tasks started."""
    from loky.backend.utils import kill_process_tree

    with contextlib.suppress(OSError):
        kill_process_tree(process)
    process.join(5)


#: Every pool not yet garbage: all are shut at exit, before multiprocessing's own exit hook
#: would wait for their workers (registered later, this hook runs first).
_ALL: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_parked: list[WorkerPool] = []  # at most one pool, idle, for the next call to take
_parked_lock = threading.Lock()


def take_pool(n_workers: int, env: Mapping[str, str], run: Callable[..., bytes],
              initializer: Callable[[], None]) -> WorkerPool:
    """The parked pool if it matches, else a new one (a parked pool that does not is shut)."""
    with _parked_lock:
        parked = _parked.pop() if _parked else None
    if parked is not None and parked.key == pool_key(n_workers, env, run, initializer):
        return parked
    if parked is not None:
        parked.shutdown()
    return WorkerPool(n_workers, env, run, initializer)


def pool_key(n_workers: int, env: Mapping[str, str], run: Callable[..., bytes],
             initializer: Callable[[], None]) -> tuple[Any, ...]:
    """What makes two pools interchangeable: their size, environment and worker functions."""
    return (max(1, n_workers), sorted(env.items()), run, initializer)


def park(pool: WorkerPool) -> None:
    """Keep ``pool`` for the next call; one left with chunks out, or another already parked,
    is shut."""
    if pool.busy:
        pool.kill_busy()
    with _parked_lock:
        old = _parked.pop() if _parked else None
        _parked.append(pool)
    if old is not None:
        old.shutdown()


def parked_pool_ready() -> bool:
    """Whether a call could take a pool whose workers are ready (then no child is forked for
    its first chunk: the pool answers sooner)."""
    with _parked_lock:
        return bool(_parked) and _parked[0].ready()


@atexit.register
def _shutdown_all() -> None:
    with _parked_lock:
        _parked.clear()
    for pool in list(_ALL):
        pool.shutdown()
