"""``remote_map``: call a function on every set of arguments, in parallel, results in order."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotemap.backends import get_backend_class
from remotemap.backends.base import Backend, TaskOptions
from remotemap.config import Config, load_config
from remotemap.driver import Policy, Update, collect, drive
from remotemap.errors import BackendUnavailable, RemoteException
from remotemap.interrupts import terminate_unwinds
from remotemap.runs import RunStore
from remotemap.tasks import normalize_arguments

log = logging.getLogger("remotemap")

_ON_ERROR = ("continue", "stop")
PathLike = str | os.PathLike[str]


def remote_map(
    func: Callable[..., Any],
    largs: Sequence[Sequence[Any]] | None = None,
    lkwargs: Sequence[Mapping[str, Any]] | None = None,
    mode: str | None = None,
    *,
    config: Config | PathLike | None = None,
    progress: bool | None = None,
    on_error: str = "continue",
    timeout: float | None = None,
    retries: int = 0,
    backoff: float = 0.5,
    env: Mapping[str, str] | None = None,
    run_dir: PathLike | None = None,
    resume: PathLike | None = None,
    **options: Any,
) -> list[Any]:
    """Return ``[func(*largs[i], **lkwargs[i]) for i in ...]``, computed by the backend ``mode``.

    ``largs`` is a list of positional-argument tuples, ``lkwargs`` a list of keyword-argument
    dicts; either may be None (see :func:`remotemap.tasks.normalize_arguments`). ``mode`` picks
    the backend (default: the config's ``remotemap.mode``, itself ``"local"`` by default).
    Extra keyword ``options`` override the mode's config section for this call, e.g.
    ``n_jobs=4``.

    - ``progress``: draw a bar (None: when stderr is a terminal).
    - ``on_error``: ``"continue"`` runs every task and then raises; ``"stop"`` stops at the
      first failure. Either way :class:`RemoteException` carries every failure and every
      result that was computed.
    - ``timeout``: seconds a task may run; a task over it is killed and fails (``kind
      "timeout"``) while the others go on.
    - ``retries``: further attempts for a failed task, after ``backoff`` seconds, doubled each
      time; every attempt is recorded on the final failure (``.previous``).
    - ``env``: environment variables set where the tasks run, not in this process.
    - ``run_dir``: keep the run in this directory (created, or resumed if it holds this run);
      ``resume``: a stored run's id or directory. A resumed run keeps the results it has and
      runs only the tasks that failed or never finished.
    """
    run = _prepare(func, largs, lkwargs, mode, config, on_error, timeout, retries, backoff,
                   env, run_dir, resume, options)
    started = time.monotonic()
    with terminate_unwinds():
        outcome = collect(run.updates(progress), run.n_tasks)
    log.debug("remote_map: %d tasks on %s in %.3f s, %d failed", run.n_tasks, run.mode,
              time.monotonic() - started, len(outcome.failures))
    run.finish(len(outcome.failures))
    if outcome.failures:
        raise RemoteException(outcome.failures, outcome.results, run_dir=run.stored_at)
    return outcome.results


def remote_imap(
    func: Callable[..., Any],
    largs: Sequence[Sequence[Any]] | None = None,
    lkwargs: Sequence[Mapping[str, Any]] | None = None,
    mode: str | None = None,
    *,
    config: Config | PathLike | None = None,
    progress: bool | None = None,
    on_error: str = "continue",
    timeout: float | None = None,
    retries: int = 0,
    backoff: float = 0.5,
    env: Mapping[str, str] | None = None,
    run_dir: PathLike | None = None,
    resume: PathLike | None = None,
    **options: Any,
) -> Iterator[tuple[int, Any]]:
    """Like :func:`remote_map`, but yield ``(index, result)`` as each task finishes.

    Failures are raised as one :class:`RemoteException` once every task has run (with
    ``on_error="stop"``: at the first one); leaving the loop early stops the workers.
    """
    run = _prepare(func, largs, lkwargs, mode, config, on_error, timeout, retries, backoff,
                   env, run_dir, resume, options)
    return _imap(run, progress)


def _imap(run: _Run, progress: bool | None) -> Iterator[tuple[int, Any]]:
    results: list[Any] = [None] * run.n_tasks
    failures = []
    with terminate_unwinds():
        for update in run.updates(progress):
            for index, value in zip(update.indices, update.values, strict=True):
                results[index] = value
                yield index, value
            failures += update.failures
    run.finish(len(failures))
    if failures:
        raise RemoteException(failures, results, run_dir=run.stored_at)


@dataclass
class _Run:
    mode: str
    backend: Backend
    func: Callable[..., Any]
    largs: list[tuple[Any, ...]]
    lkwargs: list[dict[str, Any]]
    policy: Policy
    store: RunStore | None

    @property
    def n_tasks(self) -> int:
        return len(self.largs)

    @property
    def stored_at(self) -> Path | None:
        return self.store.root if self.store is not None else None

    def updates(self, progress: bool | None) -> Iterator[Update]:
        if not self.largs:
            return iter(())
        log.debug("remote_map: %d tasks on %s", self.n_tasks, self.mode)
        return drive(self.backend, self.func, self.largs, self.lkwargs, self.policy,
                     progress=progress, store=self.store)

    def finish(self, n_failed: int) -> None:
        if self.store is not None:
            stored = self.store.load()
            self.store.update(state="failed" if n_failed else "done", ok=len(stored.values),
                              failed=len(stored.failures))


def _prepare(func: Callable[..., Any], largs: Sequence[Sequence[Any]] | None,
             lkwargs: Sequence[Mapping[str, Any]] | None, mode: str | None,
             config: Config | PathLike | None, on_error: str, timeout: float | None,
             retries: int, backoff: float, env: Mapping[str, str] | None,
             run_dir: PathLike | None, resume: PathLike | None,
             options: dict[str, Any]) -> _Run:
    """Check every argument before anything starts; build the backend and the run's store."""
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}: {func!r:.80}")
    policy = make_policy(on_error, timeout, retries, backoff, env)
    all_args, all_kwargs = normalize_arguments(largs, lkwargs)
    cfg = config if isinstance(config, Config) else load_config(config)
    mode = mode if mode is not None else str(cfg.get("remotemap.mode"))
    backend = make_backend(mode, cfg, options)
    store = open_store(run_dir, resume, mode, func, all_args, all_kwargs)
    return _Run(mode, backend, func, all_args, all_kwargs, policy, store)


def make_backend(mode: str, cfg: Config, options: Mapping[str, Any]) -> Backend:
    backend_class = get_backend_class(mode)
    reason = backend_class.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"mode {mode!r} cannot run here: {reason}")
    return backend_class(cfg.settings_for(mode, options))


def make_policy(on_error: str, timeout: float | None, retries: int, backoff: float,
                env: Mapping[str, str] | None) -> Policy:
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, _ON_ERROR))}, "
                         f"got {on_error!r}")
    if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
    env = dict(env or {})
    bad = [k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"env must map names to strings; env[{bad[0]!r}] is "
                        f"{type(env[bad[0]]).__name__}")
    return Policy(on_error, retries, float(backoff), TaskOptions(timeout, env))


def open_store(run_dir: PathLike | None, resume: PathLike | None, mode: str,
               func: Callable[..., Any], largs: list[tuple[Any, ...]],
               lkwargs: list[dict[str, Any]]) -> RunStore | None:
    if run_dir is not None and resume is not None:
        raise ValueError("give run_dir (a new or resumable run's directory) or resume (a "
                         "stored run), not both")
    if resume is not None:
        store = RunStore.find(resume)
    elif run_dir is not None and RunStore.exists_at(Path(run_dir).expanduser()):
        store = RunStore(Path(run_dir).expanduser().resolve())
    elif run_dir is not None:
        return RunStore.create(Path(run_dir).expanduser().resolve(), mode, func, largs, lkwargs)
    else:
        return None
    n_stored = int(store.meta()["n_tasks"])
    if n_stored != len(largs):
        raise ValueError(f"the stored run {store.root} has {n_stored} tasks, this call "
                         f"{len(largs)}: resume it with the same arguments")
    store.update(state="running", mode=mode)
    return store
