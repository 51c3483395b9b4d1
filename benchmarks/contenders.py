"""The ways of running ``[func(*args) for args in largs]`` that the benchmarks compare.

Every contender has the same face, :class:`Runner`: ``map(func, largs)`` returns the results
in order. Heavy imports happen in :func:`import_for` (the cold-start benchmark times them on
their own), never at this module's import.

=================== ==================================================================
``serial``          a plain loop in this process: the reference every overhead is above
``local``           ``remote_map(mode="local")``: joblib/loky workers, auto chunks
``local_with_dumps`` ``remote_map(mode="local_with_dumps")``: a fork server, one process a task
``joblib``          raw ``Parallel(n_jobs=2)(delayed(func)(*args) ...)``, every default
``mp.Pool``         ``multiprocessing.Pool(2).starmap`` (fork on Linux, default chunksize)
``subprocess``      a fresh ``python -c LOADER`` per task, 2 at a time, task and result as
                    pickle files
=================== ==================================================================
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

CONTENDERS: tuple[str, ...] = (
    "serial",
    "local",
    "local_with_dumps",
    "joblib",
    "mp.Pool",
    "subprocess",
)

#: Contenders that keep worker processes between calls, so a warm-up call starts them.
REUSES_WORKERS: frozenset[str] = frozenset({"local", "joblib", "mp.Pool"})

#: The project root: the ``benchmarks`` package and ``remotemap`` import from here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Func = Callable[..., Any]
Largs = Sequence[tuple[Any, ...]]


def isolate_environment(config_home: str) -> None:
    """Make every process we start import ``benchmarks`` and read no user config file.

    ``config_home`` should be an empty directory: it becomes ``$XDG_CONFIG_HOME``, so
    ``remote_map`` runs with its defaults whatever the machine's ``~/.config`` holds.
    """
    paths = [ROOT, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    os.environ["XDG_CONFIG_HOME"] = config_home
    os.environ.pop("REMOTEMAP_CONFIG", None)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def import_for(name: str) -> None:
    """Import what a user of contender ``name`` imports before calling it."""
    if name in ("local", "local_with_dumps"):
        import remotemap  # noqa: F401
    elif name == "joblib":
        import joblib  # noqa: F401
    elif name == "mp.Pool":
        import multiprocessing  # noqa: F401
    elif name == "subprocess":
        import concurrent.futures  # noqa: F401
        import pickle  # noqa: F401
        import subprocess  # noqa: F401
    elif name != "serial":
        raise ValueError(f"unknown contender {name!r}; expected one of {CONTENDERS}")


def _drop_foreign_loky_executor() -> bool:
    """Shut joblib's process-wide loky executor down if joblib did not make it.

    remotemap once drove joblib's own copy of loky, and joblib's ``Parallel`` then picked that
    executor up and failed (``'_ReusablePoolExecutor' object has no attribute
    '_temp_folder_manager'``). remotemap now uses the standalone loky package, so this should
    never fire; it is kept, and counted in the results, to show that it does not.
    """
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None and not hasattr(executor, "_temp_folder_manager"):
        executor.shutdown(wait=True)
        return True
    return False


class Runner:
    """One contender, ready to map functions; :meth:`close` frees what it keeps (a pool)."""

    def __init__(self, name: str, n_jobs: int = 2) -> None:
        if name not in CONTENDERS:
            raise ValueError(f"unknown contender {name!r}; expected one of {CONTENDERS}")
        self.name = name
        self.n_jobs = n_jobs
        self._pool: Any = None
        self._tmp: str | None = None
        #: How often joblib found loky's executor left by remote_map and had to replace it.
        self.foreign_executor_resets = 0

    def map(self, func: Func, largs: Largs) -> list[Any]:
        if self.name == "serial":
            return [func(*args) for args in largs]
        if self.name in ("local", "local_with_dumps"):
            from remotemap import ModeName, remote_map

            return remote_map(func, largs, mode=ModeName(self.name), progress=False,
                              n_jobs=self.n_jobs)
        if self.name == "joblib":
            from joblib import Parallel, delayed

            if _drop_foreign_loky_executor():
                self.foreign_executor_resets += 1
            return list(Parallel(n_jobs=self.n_jobs)(delayed(func)(*args) for args in largs))
        if self.name == "mp.Pool":
            if self._pool is None:
                import multiprocessing

                self._pool = multiprocessing.Pool(self.n_jobs)
            return list(self._pool.starmap(func, largs))
        return self._map_subprocess(func, largs)

    def _map_subprocess(self, func: Func, largs: Largs) -> list[Any]:
        import pickle
        import subprocess
        from concurrent.futures import ThreadPoolExecutor

        from benchmarks.tasks import SUBPROCESS_LOADER

        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="remotemap-bench-")
        tmp = self._tmp

        def one(i: int) -> Any:
            task, out = os.path.join(tmp, f"task-{i}.pkl"), os.path.join(tmp, f"out-{i}.pkl")
            with open(task, "wb") as f:
                pickle.dump((func, largs[i]), f, protocol=pickle.HIGHEST_PROTOCOL)
            subprocess.run([sys.executable, "-c", SUBPROCESS_LOADER, task, out], check=True)
            with open(out, "rb") as f:
                value = pickle.load(f)
            os.unlink(task)
            os.unlink(out)
            return value

        with ThreadPoolExecutor(self.n_jobs) as threads:
            return list(threads.map(one, range(len(largs))))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
