"""joblib's backend "remotemap" on the local modes: registration, n_jobs, results, errors.

scikit-learn on every kind of mode (a file-based one, ssh, cluster): test_joblib_backend_sklearn.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import joblib
import pytest
from joblib import Parallel, delayed

import remotemap
from remotemap import RemoteException, RemoteTraceback
from remotemap.joblib_backend import RemotemapBackend

DUMPS: dict[str, Any] = {"mode": "local_with_dumps", "n_jobs": 2}


def _pid_after(x: int, seconds: float = 0.0) -> tuple[int, int]:
    time.sleep(seconds)
    return x, os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"task got {x}")
    return x


def _nested(x: int) -> tuple[int, list[int], str]:
    """A Parallel call inside a task: which backend runs it, in which processes."""
    inner = Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(3))
    backend = type(joblib.parallel.get_active_backend()[0]).__name__
    return os.getpid(), inner, backend


def _mark_then(path: str, x: int) -> int:
    """Leaves a file named after ``x``, then fails for 0 and sleeps for the others."""
    Path(path, str(x)).touch()
    if x == 0:
        raise KeyError("first")
    time.sleep(1.0)
    return x


def _fail_first_attempt(flag: str) -> str:
    if not os.path.exists(flag):
        Path(flag).touch()
        raise OSError("first attempt")
    return "second attempt"


def _threads_env() -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


# -- registration: import orders, laziness, explicit ---------------------------------------------

_CHECK = textwrap.dedent("""
    import sys
    {imports}
    import joblib.parallel
    assert not [f for f in sys.meta_path if type(f).__name__ == "_JoblibFinder"], "hook left"
    assert "remotemap" in joblib.parallel.BACKENDS
    assert "remotemap.joblib_backend" not in sys.modules, "registered eagerly"
    with joblib.parallel_config(backend="remotemap", mode="serial") as config:
        backend = type(config["backend"]).__name__
        print(backend, joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(3)))
""")


@pytest.mark.parametrize("imports", ["import remotemap\nimport joblib",
                                     "import joblib\nimport remotemap",
                                     "import remotemap\nfrom joblib import parallel"])
def test_registered_whichever_comes_first(imports: str) -> None:
    code = _CHECK.format(imports=imports)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1) == ["RemotemapBackend", "[0, 1, 2]\n"]


def test_import_remotemap_does_not_import_joblib() -> None:
    code = ("import sys, remotemap; print(sorted(m for m in sys.modules if m == 'joblib' or "
            "m.startswith(('joblib.', 'remotemap.joblib', 'remotemap.executor'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_register_joblib_is_public_and_repeatable() -> None:
    remotemap.register_joblib()
    remotemap.register_joblib()
    assert joblib.parallel.BACKENDS["remotemap"] is RemotemapBackend
    with joblib.parallel_config(backend="remotemap", **DUMPS):
        assert Parallel()(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]


def test_unknown_mode_and_option_fail_at_parallel_config() -> None:
    with pytest.raises(ValueError, match="no_such_mode"):
        joblib.parallel_config(backend="remotemap", mode="no_such_mode")
    with pytest.raises(TypeError, match="no_such_option"):
        joblib.parallel_config(backend="remotemap", mode="local", no_such_option=1)


# -- n_jobs --------------------------------------------------------------------------------------

def test_n_jobs_counts_the_mode_slots() -> None:
    backend = RemotemapBackend(mode="local_with_dumps", n_jobs=3)
    assert [backend.effective_n_jobs(n) for n in (-1, None, 2, 3, 8, -2, -3)] == \
        [3, 3, 2, 3, 3, 2, 2]  # -3: one slot, still on the mode (joblib runs 1 in the caller)
    assert backend.effective_n_jobs(1) == 1
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)
    assert RemotemapBackend(mode="serial").effective_n_jobs(-1) == 1
    # As scikit-learn asks, with no n_jobs given. (The mode's own n_jobs cannot go through
    # parallel_config, which keeps that name for joblib's: a backend instance carries it.)
    with joblib.parallel_config(backend=backend):
        assert joblib.effective_n_jobs() == 3


def test_n_jobs_1_runs_in_the_caller_and_others_in_workers() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS):
        alone = Parallel(n_jobs=1)(delayed(_pid_after)(i) for i in range(3))
        spread = Parallel()(delayed(_pid_after)(i) for i in range(3))
    assert {pid for _, pid in alone} == {os.getpid()}
    assert [x for x, _ in spread] == [0, 1, 2] and os.getpid() not in {p for _, p in spread}


def test_n_jobs_k_bounds_the_tasks_at_once(tmp_path: Path) -> None:
    # 4 slots, n_jobs=2, 4 tasks of 0.6 s, one per batch: two rounds, never four at once.
    started = time.monotonic()
    with joblib.parallel_config(backend=RemotemapBackend(mode="local_with_dumps", n_jobs=4)):
        got = Parallel(n_jobs=2, batch_size=1)(delayed(_pid_after)(i, 0.6) for i in range(4))
    assert [x for x, _ in got] == [0, 1, 2, 3]
    assert time.monotonic() - started >= 1.2


# -- results: generators, exhausted input, nesting -----------------------------------------------

def test_generators_ordered_and_unordered() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS):
        ordered = Parallel(return_as="generator")(delayed(_pid_after)(i) for i in range(5))
        assert next(ordered)[0] == 0  # a generator, started before the others are consumed
        assert [x for x, _ in ordered] == [1, 2, 3, 4]
        # The slow first task comes last when results come as they finish.
        waits = [3.0, 0.0, 0.0]  # room for two forks on a loaded machine
        unordered = Parallel(return_as="generator_unordered", batch_size=1)(
            delayed(_pid_after)(i, w) for i, w in enumerate(waits))
        got = [x for x, _ in unordered]
    assert sorted(got) == [0, 1, 2] and got[-1] == 0


def test_exhausted_and_empty_iterators() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS):
        used = iter([delayed(abs)(-1)])
        assert Parallel()(used) == [1]
        assert Parallel()(used) == []
        assert Parallel()([]) == []


def test_nested_calls_run_sequentially_inside_the_task() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS):
        got = Parallel()(delayed(_nested)(i) for i in range(2))
    for pid, inner, backend in got:
        assert pid != os.getpid() and inner == [pid] * 3
        assert backend == "SequentialBackend"


def test_with_parallel_block_reuses_one_executor() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS), Parallel() as parallel:
        first = parallel(delayed(_pid_after)(i) for i in range(2))
        second = parallel(delayed(_pid_after)(i) for i in range(2, 4))
    assert [x for x, _ in first + second] == [0, 1, 2, 3]


# -- failures ------------------------------------------------------------------------------------

def test_a_task_error_raises_its_own_type_with_the_remote_traceback() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS), \
            pytest.raises(ValueError, match="task got 3") as info:
        Parallel()(delayed(_fail_on_three)(i) for i in range(6))
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_fail_on_three" in str(cause) and cause.failure.kind == "exception"


def test_after_an_error_the_rest_is_not_run(tmp_path: Path) -> None:
    # n_jobs=2, 20 tasks of 1 s: task 0 fails at once; joblib raises it and what had not
    # started is cancelled, what ran is stopped.
    started = time.monotonic()
    with joblib.parallel_config(backend="remotemap", **DUMPS), pytest.raises(KeyError):
        Parallel(batch_size=1)(delayed(_mark_then)(str(tmp_path), i) for i in range(20))
    assert time.monotonic() - started < 6
    assert len(list(tmp_path.iterdir())) < 10


def test_a_crash_fails_its_batch_as_remote_exception() -> None:
    with joblib.parallel_config(backend="remotemap", **DUMPS), \
            pytest.raises(RemoteException) as info:
        Parallel()(delayed(os._exit)(3) for _ in range(1))
    assert info.value.failures[0].kind == "crash"


def test_retries_and_env_reach_the_executor(tmp_path: Path) -> None:
    flag = str(tmp_path / "flag")
    with joblib.parallel_config(backend="remotemap", retries=1, backoff=0.0,
                                inner_max_num_threads=3, **DUMPS):
        got = Parallel(n_jobs=2)([delayed(_fail_first_attempt)(flag), delayed(_threads_env)()])
    assert got == ["second attempt", "3"]


def test_a_backend_instance_passed_to_parallel(tmp_path: Path) -> None:
    backend: Any = RemotemapBackend(**DUMPS)
    assert Parallel(backend=backend)(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
