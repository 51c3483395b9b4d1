"""``remote_map``: call a function on every set of arguments, in parallel, results in order."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from remotemap.backends import get_backend_class
from remotemap.backends.base import Backend
from remotemap.backends.foreign_executor import executor_backend
from remotemap.call_options import Mode, ModeName, OnError, WhenFunctionChanged
from remotemap.config import Config, load_config
from remotemap.driver import Outcome, Policy, Update, collect, drive, make_policy
from remotemap.errors import BackendUnavailable, RemoteException
from remotemap.interrupts import terminate_unwinds
from remotemap.run_records import Fingerprints
from remotemap.runs import RunStore
from remotemap.tasks import normalize_arguments

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from remotemap.call_options import MapOnExecutorOptions, MapOptions

log = logging.getLogger("remotemap")

_FUNCTION_CHANGED = ("error", "rerun", "keep")
#: The options remote_map takes besides a mode's own, listed when an option is unknown.
MAP_OPTIONS = ("timeout", "retries", "backoff", "env", "on_error", "progress", "run_dir",
               "resume", "function_changed", "config", "executor", "stream_output")
#: The same for Executor.
EXECUTOR_OPTIONS = ("max_workers", "timeout", "retries", "backoff", "env", "config", "executor",
                    "stream_output")
PathLike = str | os.PathLike[str]
T = TypeVar("T")
Largs = Sequence[Sequence[Any]] | None
Lkwargs = Sequence[Mapping[str, Any]] | None


@overload
def remote_map(func: Callable[..., T], largs: Largs = None, lkwargs: Lkwargs = None,
               mode: Mode | None = None, **options: Unpack[MapOptions]) -> list[T]: ...
@overload
def remote_map(func: Callable[..., T], largs: Largs = None, lkwargs: Lkwargs = None,
               mode: None = None, *, executor: concurrent.futures.Executor,
               **options: Unpack[MapOnExecutorOptions]) -> list[T]: ...
@overload
def remote_map(func: Callable[..., T], largs: Largs, lkwargs: Lkwargs, mode: ModeName, *,
               config: Config | PathLike | None = None, progress: bool | None = None,
               on_error: OnError = "continue", timeout: float | None = None,
               retries: int = 0, backoff: float = 0.5, env: Mapping[str, str] | None = None,
               run_dir: PathLike | None = None, resume: PathLike | None = None,
               function_changed: WhenFunctionChanged = "error", **options: Any) -> list[T]: ...
@overload
def remote_map(func: Callable[..., T], largs: Largs = None, lkwargs: Lkwargs = None, *,
               mode: ModeName, config: Config | PathLike | None = None,
               progress: bool | None = None, on_error: OnError = "continue",
               timeout: float | None = None, retries: int = 0, backoff: float = 0.5,
               env: Mapping[str, str] | None = None, run_dir: PathLike | None = None,
               resume: PathLike | None = None, function_changed: WhenFunctionChanged = "error",
               **options: Any) -> list[T]: ...
def remote_map(
    func: Callable[..., Any],
    largs: Largs = None,
    lkwargs: Lkwargs = None,
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
    function_changed: str = "error",
    executor: concurrent.futures.Executor | None = None,
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
    - ``stream_output``: show what the tasks print (stdout and stderr, each line prefixed
      ``[task N] ``, above the progress bar) during the run (None: the config's
      ``remotemap.stream_output``, True by default); False keeps it only captured
      (``TaskFailure.output``, stored runs). See ``docs/failures.md``.
    - ``run_dir``: keep the run in this directory (created, or resumed if it holds a run);
      ``resume``: a stored run's id or directory. A resumed run reuses a stored result only
      for a task at the same position with the same arguments (by fingerprint), computed by
      the same function (its code and what it uses, see :mod:`remotemap.fingerprint`); every
      other task runs: failed, unfinished, changed, added. The directory must be this user's
      and private (:class:`~remotemap.errors.UnsafePath` otherwise), and takes one call at a
      time (:class:`~remotemap.locks.RunDirectoryBusy` names the process holding it).
    - ``function_changed``: what a resumed run does when the function is not the one its
      stored results came from: ``"error"`` (default) refuses with
      :class:`~remotemap.runs.FunctionChanged`, storing nothing; ``"rerun"`` drops every
      result of another version (also those kept before) and runs those tasks again;
      ``"keep"`` keeps the results of the earlier version for unchanged tasks and runs the
      others with this one.
    - ``executor``: run the tasks on this ``concurrent.futures`` executor (a thread or process
      pool, loky's, a dask client's ``get_executor()``) instead of a mode: then give neither a
      mode, nor ``config``, nor a mode's options. Retries, ``on_error``, ``run_dir`` and the
      failures mean the same; ``timeout`` and ``env`` need a process pool (see
      :mod:`remotemap.backends.foreign_executor`). The executor is left open.

    Type checkers see ``mode`` as a :data:`~remotemap.Mode` (a built-in mode, with its typed
    options) or a :data:`~remotemap.ModeName` (any other mode, any option).
    """
    run = _prepare(func, largs, lkwargs, mode, config, on_error, timeout, retries, backoff,
                   env, run_dir, resume, function_changed, options, executor)
    outcome = run.collect(progress)
    if outcome.failures:
        raise RemoteException(outcome.failures, outcome.results, run_dir=run.stored_at)
    return outcome.results


@overload
def remote_imap(func: Callable[..., T], largs: Largs = None, lkwargs: Lkwargs = None,
                mode: Mode | None = None,
                **options: Unpack[MapOptions]) -> Iterator[tuple[int, T]]: ...
@overload
def remote_imap(func: Callable[..., T], largs: Largs = None, lkwargs: Lkwargs = None,
                mode: None = None, *, executor: concurrent.futures.Executor,
                **options: Unpack[MapOnExecutorOptions]) -> Iterator[tuple[int, T]]: ...
@overload
def remote_imap(func: Callable[..., T], largs: Largs, lkwargs: Lkwargs, mode: ModeName, *,
                config: Config | PathLike | None = None, progress: bool | None = None,
                on_error: OnError = "continue", timeout: float | None = None,
                retries: int = 0, backoff: float = 0.5, env: Mapping[str, str] | None = None,
                run_dir: PathLike | None = None, resume: PathLike | None = None,
                function_changed: WhenFunctionChanged = "error",
                **options: Any) -> Iterator[tuple[int, T]]: ...
@overload
def remote_imap(func: Callable[..., T], largs: Largs = None, lkwargs: Lkwargs = None, *,
                mode: ModeName, config: Config | PathLike | None = None,
                progress: bool | None = None, on_error: OnError = "continue",
                timeout: float | None = None, retries: int = 0, backoff: float = 0.5,
                env: Mapping[str, str] | None = None, run_dir: PathLike | None = None,
                resume: PathLike | None = None, function_changed: WhenFunctionChanged = "error",
                **options: Any) -> Iterator[tuple[int, T]]: ...
def remote_imap(
    func: Callable[..., Any],
    largs: Largs = None,
    lkwargs: Lkwargs = None,
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
    function_changed: str = "error",
    executor: concurrent.futures.Executor | None = None,
    **options: Any,
) -> Iterator[tuple[int, Any]]:
    """Like :func:`remote_map`, but yield ``(index, result)`` as each task finishes.

    Failures are raised as one :class:`RemoteException` once every task has run (with
    ``on_error="stop"``: at the first one); leaving the loop early stops the workers.
    """
    run = _prepare(func, largs, lkwargs, mode, config, on_error, timeout, retries, backoff,
                   env, run_dir, resume, function_changed, options, executor)
    return _imap(run, progress)


def _imap(run: _Run, progress: bool | None) -> Iterator[tuple[int, Any]]:
    results: list[Any] = [None] * run.n_tasks
    failures = []
    try:
        with terminate_unwinds():
            for update in run.updates(progress):
                for index, value in zip(update.indices, update.values, strict=True):
                    results[index] = value
                    yield index, value
                failures += update.failures
        run.finish(len(failures))
    finally:
        run.close()
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

    def collect(self, progress: bool | None) -> Outcome:
        """Run every task to the end (``remote_map``); the stored run is left for others."""
        started = time.monotonic()
        try:
            with terminate_unwinds():
                outcome = collect(self.updates(progress), self.n_tasks)
            log.debug("remote_map: %d tasks on %s in %.3f s, %d failed", self.n_tasks,
                      self.mode, time.monotonic() - started, len(outcome.failures))
            self.finish(len(outcome.failures))
        finally:
            self.close()
        return outcome

    def finish(self, n_failed: int) -> None:
        if self.store is not None:
            stored = self.store.load()
            self.store.update(state="failed" if n_failed else "done", ok=len(stored.values),
                              failed=len(stored.failures))

    def close(self) -> None:
        """Let another process take up the stored run."""
        if self.store is not None:
            self.store.close()


def _prepare(func: Callable[..., Any], largs: Largs, lkwargs: Lkwargs, mode: str | None,
             config: Config | PathLike | None, on_error: str, timeout: float | None,
             retries: int, backoff: float, env: Mapping[str, str] | None,
             run_dir: PathLike | None, resume: PathLike | None, function_changed: str,
             options: dict[str, Any], executor: concurrent.futures.Executor | None) -> _Run:
    """Check every argument before anything starts; build the backend and the run's store."""
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}: {func!r:.80}")
    stream = options.pop("stream_output", None)
    policy = make_policy(on_error, timeout, retries, backoff, env, stream is None or stream)
    all_args, all_kwargs = normalize_arguments(largs, lkwargs)
    backend: Backend
    if executor is not None:
        if mode is not None or config is not None or options:
            given = [f"mode={mode!r}"] * (mode is not None) + ["config"] * (config is not None)
            raise ValueError(f"give an executor or a mode with its options, not both: "
                             f"executor= was given with {', '.join(given + sorted(options))}")
        backend = executor_backend(executor, policy.options)
        mode = backend.name
    else:
        cfg, mode = run_config(config, mode)
        policy = configured_stream(policy, stream, cfg)
        backend = make_backend(mode, cfg, options, MAP_OPTIONS)
    store = open_store(run_dir, resume, mode, func, all_args, all_kwargs, function_changed)
    return _Run(mode, backend, func, all_args, all_kwargs, policy, store)


def run_config(config: Config | PathLike | None, mode: str | None) -> tuple[Config, str]:
    """The config of a run and its mode. Only the sections the run uses must be valid: an
    error elsewhere in the file is a warning (see :meth:`Config.require`)."""
    cfg = config if isinstance(config, Config) else load_config(config, strict=False)
    used = [] if mode is not None else ["remotemap"]
    if mode is None:
        cfg.require(used, warn=False)  # the rest once the mode is known
        mode = str(cfg.get("remotemap.mode"))
    cfg.require([*used, mode])
    return cfg, mode


def configured_stream(policy: Policy, stream_output: bool | None, cfg: Config) -> Policy:
    """``policy`` with the config's ``remotemap.stream_output`` when the call gave none."""
    if stream_output is not None:
        return policy
    return dataclasses.replace(policy, stream_output=cfg.get("remotemap.stream_output") is True)


def make_backend(mode: str, cfg: Config, options: Mapping[str, Any],
                 common: Sequence[str] = ()) -> Backend:
    """The backend of ``mode``; ``common`` are the caller's other options (named when an
    option is unknown)."""
    backend_class = get_backend_class(mode)
    settings = cfg.settings_for(mode, options, common)
    reason = backend_class.unavailable_reason(settings)
    if reason is not None:
        raise BackendUnavailable(f"mode {mode!r} cannot run here: {reason}")
    return backend_class(settings)


def open_store(run_dir: PathLike | None, resume: PathLike | None, mode: str,
               func: Callable[..., Any], largs: list[tuple[Any, ...]],
               lkwargs: list[dict[str, Any]], function_changed: str = "error") -> RunStore | None:
    """The stored run of this call, locked until its ``close`` (None without one)."""
    if run_dir is not None and resume is not None:
        raise ValueError("give run_dir (a new or resumable run's directory) or resume (a "
                         "stored run), not both")
    if function_changed not in _FUNCTION_CHANGED:
        raise ValueError(f"function_changed must be one of "
                         f"{', '.join(map(repr, _FUNCTION_CHANGED))}, got {function_changed!r}")
    if resume is not None:
        store = RunStore.open(RunStore.find(resume), must_exist=True)
    elif run_dir is not None:
        store = RunStore.open(Path(run_dir).expanduser().resolve(), must_exist=False)
    else:
        return None
    try:
        store.start(mode, func, Fingerprints.of(func, largs, lkwargs), largs, lkwargs,
                    function_changed)
    except BaseException:
        store.close()
        raise
    return store
