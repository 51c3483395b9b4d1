"""``remote_map``: call a function on every set of arguments, in parallel, results in order."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from remotemap.backends import get_backend_class
from remotemap.config import Config, load_config
from remotemap.errors import BackendUnavailable, RemoteException, TaskFailure
from remotemap.interrupts import terminate_unwinds
from remotemap.progress import Progress
from remotemap.tasks import make_chunks, normalize_arguments

log = logging.getLogger("remotemap")

_ON_ERROR = ("continue", "stop")


def remote_map(
    func: Callable[..., Any],
    largs: Sequence[Sequence[Any]] | None = None,
    lkwargs: Sequence[Mapping[str, Any]] | None = None,
    mode: str | None = None,
    *,
    config: Config | str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    on_error: str = "continue",
    **options: Any,
) -> list[Any]:
    """Return ``[func(*largs[i], **lkwargs[i]) for i in ...]``, computed by the backend ``mode``.

    ``largs`` is a list of positional-argument tuples, ``lkwargs`` a list of keyword-argument
    dicts; either may be None (see :func:`remotemap.tasks.normalize_arguments`). ``mode`` picks
    the backend (default: the config's ``remotemap.mode``, itself ``"local"`` by default).
    Extra keyword ``options`` override the mode's config section for this call, e.g.
    ``n_jobs=4``. ``progress`` draws a bar (None: when stderr is a terminal).
    ``on_error="continue"`` runs every task and then raises; ``"stop"`` stops at the first
    failure. Either way failures raise :class:`RemoteException` carrying every failure and every
    result that was computed.
    """
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}: {func!r:.80}")
    if on_error not in _ON_ERROR:
        raise ValueError(
            f"on_error must be one of {', '.join(map(repr, _ON_ERROR))}, got {on_error!r}"
        )
    all_args, all_kwargs = normalize_arguments(largs, lkwargs)
    cfg = config if isinstance(config, Config) else load_config(config)
    mode = mode if mode is not None else str(cfg.get("remotemap.mode"))
    backend_class = get_backend_class(mode)
    reason = backend_class.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"mode {mode!r} cannot run here: {reason}")
    backend = backend_class(cfg.settings_for(mode, options))

    n_tasks = len(all_args)
    results: list[Any] = [None] * n_tasks
    if n_tasks == 0:
        return results
    failures: list[TaskFailure] = []
    started = time.monotonic()
    log.debug("remote_map: %d tasks on %s", n_tasks, mode)
    chunks = make_chunks(all_args, all_kwargs, backend.chunksize(n_tasks))
    stream = backend.run(func, chunks)
    with terminate_unwinds(), Progress(n_tasks, progress, mode) as bar:
        try:
            for result in stream:
                for index, value in zip(result.indices, result.values, strict=True):
                    results[index] = value
                failures.extend(result.failures)
                bar.update(len(result.indices) + len(result.failures))
                if failures and on_error == "stop":
                    break
        finally:
            stream.close()  # stops the backend's workers if we leave early
    log.debug(
        "remote_map: %d tasks on %s in %.3f s, %d failed",
        n_tasks,
        mode,
        time.monotonic() - started,
        len(failures),
    )
    if failures:
        raise RemoteException(failures, results)
    return results
