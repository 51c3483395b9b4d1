"""joblib's backend ``"remotemap"``: ``joblib.Parallel`` on any remotemap mode.

::

    with joblib.parallel_config(backend="remotemap", mode="ssh", hosts=["node1", "node2"]):
        scores = cross_val_score(clf, X, y, cv=5)          # scikit-learn's n_jobs=None: all slots

The keyword arguments of ``parallel_config`` besides joblib's own go to
:class:`RemotemapBackend`: ``mode``, ``config``, ``timeout``, ``retries``, ``backoff``, ``env``
and the mode's options, as for :class:`remotemap.Executor`. ``import remotemap`` registers the
backend with joblib (at once, or when joblib gets imported); :func:`register_joblib` does it
explicitly.

Each ``Parallel`` call (or ``with Parallel(...)`` block) runs on one :class:`Executor`: each of
joblib's batches is one submission, so one chunk of the mode (remotemap does not re-chunk what
joblib's auto-batching sized). A batch that raised re-raises its own exception, with the remote
traceback as ``__cause__``. The executor keeps the mode's guarantees: per-task ``timeout``,
``retries``, crashes that fail one batch.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from joblib.parallel import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    register_parallel_backend,
)

from remotemap.api import make_backend
from remotemap.backends.base import Backend
from remotemap.call_options import ModeName
from remotemap.config import Config, load_config, resolve_n_jobs
from remotemap.executor import Executor

log = logging.getLogger("remotemap")

#: What joblib's ``n_jobs`` sizes the work to when a mode has no notion of its own slots (a
#: cluster's scheduler): enough batches at once that the queue, not joblib, sets the pace.
UNBOUNDED_SLOTS = 32

# Asks a host how many CPUs this process may use (what remotemap's worker server counts).
_CPUS_CODE = ("import os; f = getattr(os, 'sched_getaffinity', None); "
              "print(len(f(0)) if f else os.cpu_count() or 1)")


def register_joblib() -> None:
    """Register ``"remotemap"`` as a joblib backend (``import remotemap`` already does it)."""
    register_parallel_backend("remotemap", RemotemapBackend)


class RemotemapBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's parallel backend on remotemap mode ``mode`` (default: the config's mode).

    ``n_jobs``: ``-1`` and ``None`` use every slot of the mode (its workers; on ssh the hosts'
    CPUs or their ``n_jobs``), ``k > 1`` runs at most ``k`` batches at once, ``-k`` all slots
    but ``k - 1``; ``1`` runs in the caller, as with every joblib backend.
    """

    supports_retrieve_callback = True  # results arrive through the futures' done callbacks
    supports_inner_max_num_threads = True
    default_n_jobs = -1  # Parallel(n_jobs=None), scikit-learn's default: every slot
    uses_threads = False
    supports_sharedmem = False

    def __init__(self, mode: str | None = None, *,
                 config: Config | str | os.PathLike[str] | None = None,
                 timeout: float | None = None, retries: int = 0, backoff: float = 0.5,
                 env: Mapping[str, str] | None = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **options: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self.config = config if isinstance(config, Config) else load_config(config)
        self.mode = mode if mode is not None else str(self.config.get("remotemap.mode"))
        # Built now so that a wrong mode or option fails at parallel_config, naming it.
        self.backend: Backend = make_backend(self.mode, self.config, options)
        self.options = options
        self.policy: dict[str, Any] = {"timeout": timeout, "retries": retries,
                                       "backoff": backoff}
        self.env = dict(env or {})
        self.parallel: Any = None
        self._slots: int | None = None
        self._max_workers: int | None = None
        self._executor: Executor | None = None
        self._futures: set[concurrent.futures.Future[Any]] = set()

    # -- how many at once ----------------------------------------------------------------------
    def slots(self) -> int:
        """How many tasks the mode runs at once (asked of the ssh hosts once, then kept)."""
        if self._slots is None:
            self._slots = max(1, mode_slots(self.backend))
        return self._slots

    def _wanted(self, n_jobs: int | None) -> int:
        """How many batches at once ``n_jobs`` (not 0) asks for, at most the mode's slots."""
        slots = self.slots()
        if n_jobs is None or n_jobs < 0:
            return max(slots + 1 + (n_jobs or -1), 1)
        return min(int(n_jobs), slots)

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs == 1 or self.mode == "serial":
            return 1
        wanted = self._wanted(n_jobs)
        # joblib runs a call it sees one job for in the caller: 2 keeps the work on the mode
        # (the executor still runs only what was asked for at once, see configure).
        return max(wanted, 2)

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        effective = self.effective_n_jobs(n_jobs)
        if effective == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        wanted = self._wanted(n_jobs)
        self._max_workers = wanted if wanted < self.slots() else None
        return effective

    # -- running batches -----------------------------------------------------------------------
    def _get_executor(self) -> Executor:
        if self._executor is None:
            env = dict(self.env)
            if self.inner_max_num_threads is not None:
                threads = str(self.inner_max_num_threads)
                env = {**dict.fromkeys(self.MAX_NUM_THREADS_VARS, threads), **env}
            self._executor = Executor(ModeName(self.mode), max_workers=self._max_workers,
                                      config=self.config, env=env, **self.policy,
                                      **self.options)
        return self._executor

    def submit(self, func: Callable[[], Any],
               callback: Callable[[Any], None] | None = None) -> concurrent.futures.Future[Any]:
        future = self._get_executor().submit(func)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: concurrent.futures.Future[Any]) -> Any:
        # The batch's own exception, rebuilt here with the remote traceback as its __cause__.
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed: joblib raises it and wants none of the others. Batches not started
        are cancelled, running ones stopped; a later submission starts a new executor."""
        for future in list(self._futures):
            future.cancel()
        self._futures.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            _abort(executor)

    def terminate(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._futures.clear()
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        # A Parallel call inside a task runs one batch after another in that task's process:
        # the mode's slots are already taken by this call's batches.
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None


def _abort(executor: Executor) -> None:
    """Stop ``executor`` now, killing running tasks (``shutdown`` would let them finish), as
    joblib's own backends do after an error."""
    executor.terminate_workers()


# -- a mode's slots --------------------------------------------------------------------------

def mode_slots(backend: Backend) -> int:
    """How many tasks ``backend`` runs at once, from its settings (ssh: asks each host whose
    ``n_jobs`` is 0 for its CPUs). A mode unknown here: its ``n_jobs`` setting, else this
    machine's CPUs."""
    settings = backend.settings
    if backend.name == "serial":
        return 1
    if backend.name in ("local", "local_with_dumps"):
        return resolve_n_jobs(settings.get("n_jobs", 0))
    if backend.name == "ssh":
        return _ssh_slots(settings)
    if backend.name == "cluster":
        if settings.get("scheduler", "local") == "local" and not settings.get("host"):
            return os.cpu_count() or 1  # soma-workflow's local scheduler: one job per CPU
        return UNBOUNDED_SLOTS
    n_jobs = settings.get("n_jobs")
    if isinstance(n_jobs, int) and not isinstance(n_jobs, bool):
        return resolve_n_jobs(n_jobs)
    return os.cpu_count() or 1


def _ssh_slots(settings: Mapping[str, Any]) -> int:
    hosts = settings.get("hosts") or []
    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    n_jobs = int(settings.get("n_jobs") or 0)
    if n_jobs > 0:
        return n_jobs * len(hosts)
    # The worker server counts the same way once connected; asked now, all hosts at once,
    # since joblib sizes its batches before the first one runs.
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(hosts), 16))) as pool:
        cpus = list(pool.map(lambda host: _host_cpus(host, settings), hosts))
    return sum(max(1, c + 1 + n_jobs) if n_jobs < 0 else c for c in cpus)


def _host_cpus(host: str, settings: Mapping[str, Any]) -> int:
    """The CPUs ``host`` gives a process; 2 when it cannot tell (the run itself then reports
    what is wrong with the host)."""
    from remotemap.ssh import Connection, connection_options

    python = str(settings.get("python") or "python3")
    try:
        with Connection(host, **connection_options(settings)) as conn:
            done = conn.connect().run([python, "-c", _CPUS_CODE], timeout=30)
        return max(1, int(done.stdout_text.split()[0])) if done.ok else 2
    except Exception as exc:  # unreachable, no Python...: the run says so with its own error
        log.warning("ssh host %s: cannot count its CPUs for joblib (%s); assuming 2", host, exc)
        return 2
