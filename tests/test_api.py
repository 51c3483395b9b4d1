"""remote_map's argument checking and option handling, before any task runs."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, TaskFailure, remote_map
from remotemap.tasks import auto_chunksize, make_chunks, normalize_arguments
from tests import taskfuncs as tf


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match=r"len\(largs\) == 2, len\(lkwargs\) == 3"):
        remote_map(tf.foo, [(1,), (2,)], [{}, {}, {}], mode="serial")


@pytest.mark.parametrize("largs, lkwargs, words", [
    ({1, 2}, None, "largs must be a list"),
    ((1, 2), None, r"largs\[0\] must be a tuple or list"),
    ("abc", None, "largs must be a list"),
    (None, {"b": 1}, "lkwargs must be a list"),
    ([1, 2], None, r"largs\[0\] must be a tuple or list"),
    ([(1,)], [[("b", 1)]], r"lkwargs\[0\] must be a dict"),
    ([(1,)], [{1: 2}], r"lkwargs\[0\] has a keyword that is not a string"),
])
def test_bad_argument_lists_name_the_culprit(largs: Any, lkwargs: Any, words: str) -> None:
    with pytest.raises(TypeError, match=words):
        remote_map(tf.foo, largs, lkwargs, mode="serial")


def test_func_must_be_callable() -> None:
    with pytest.raises(TypeError, match="func must be callable, got int"):
        remote_map(3, [(1,)], mode="serial")  # type: ignore[call-overload]


def test_unknown_mode_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown mode 'nope'.*'serial', 'local'"):
        remote_map(tf.foo, [(1,)], mode="nope")  # type: ignore[call-overload]


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(TypeError, match="n_job"):
        remote_map(tf.foo, [(1,)], mode="local", n_job=3)  # type: ignore[call-overload]


def test_bad_on_error() -> None:
    with pytest.raises(ValueError, match="on_error must be one of 'continue', 'stop'"):
        remote_map(tf.foo, [(1,)], mode="serial",  # type: ignore[call-overload]
                   on_error="ignore")


def test_default_mode_is_local_and_config_can_change_it(tmp_path: Any) -> None:
    import os

    config = tmp_path / "c.toml"
    config.write_text('[remotemap]\nmode = "serial"\n')
    # serial runs in this process, so the task sees this process's pid.
    assert remote_map(os.getpid, config=config) == [os.getpid()]
    assert remote_map(os.getpid, progress=False) != [os.getpid()]


def test_tuples_and_lists_both_accepted_and_none_defaults() -> None:
    largs, lkwargs = normalize_arguments([[1, 2], (3,)], None)
    assert largs == [(1, 2), (3,)] and lkwargs == [{}, {}]
    assert normalize_arguments(None, None) == ([()], [{}])
    assert normalize_arguments(None, [{"a": 1}]) == ([()], [{"a": 1}])


def test_chunking_covers_every_task_once() -> None:
    largs = [(i,) for i in range(103)]
    chunks = list(make_chunks(largs, [{}] * 103, 10))
    assert [i for c in chunks for i in c.indices] == list(range(103))
    assert all(c.largs == [(i,) for i in c.indices] for c in chunks)
    assert [c.id for c in chunks] == list(range(11))
    subset = list(make_chunks(largs, [{}] * 103, 4, indices=[5, 9, 50]))
    assert [c.indices for c in subset] == [[5, 9, 50]]
    assert subset[0].largs == [(5,), (9,), (50,)]


def test_auto_chunksize_is_about_four_chunks_per_worker() -> None:
    assert auto_chunksize(10_000, 2) == 1250
    assert auto_chunksize(8, 2) == 1
    assert auto_chunksize(0, 2) == 1
    assert auto_chunksize(9, 2) == 2


def test_remote_exception_survives_pickling_and_summarises() -> None:
    failures = [TaskFailure(i, "ValueError", f"bad {i}", "Traceback\n  line\nValueError", "h")
                for i in range(5)]
    exc = RemoteException(failures, [None] * 5 + [1, 2])
    text = str(exc)
    assert text.startswith("5 of 7 tasks failed")
    assert "... and 2 more (tasks 3, 4)" in text
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.failed_indices == [0, 1, 2, 3, 4] and copy.results == exc.results
    assert str(copy) == text


def test_joblib_in_the_same_process_is_left_alone() -> None:
    """remotemap's pool is its own: joblib's Parallel works before and after (and keeps its
    workers), as a scikit-learn call with n_jobs would need."""
    from joblib import Parallel, delayed

    before = Parallel(n_jobs=2)(delayed(tf.square)(i) for i in range(4))
    assert remote_map(tf.square, [(i,) for i in range(4)], mode="local", progress=False) == before
    assert Parallel(n_jobs=2)(delayed(tf.square)(i) for i in range(4)) == [0, 1, 4, 9]
    assert remote_map(tf.square, [(5,)], mode="local", progress=False) == [25]


_MAIN_SCRIPT = '''
from remotemap import RemoteException, remote_map

def fail_in_main(x):
    if x == 1:
        raise ValueError("failed in __main__")
    return x

if __name__ == "__main__":
    try:
        remote_map(fail_in_main, [(0,), (1,)], mode=MODE, progress=False)
    except RemoteException as exc:
        print(exc.failures[0].traceback)
'''


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
def test_traceback_of_a_main_function_names_the_script(mode: str, tmp_path: Path) -> None:
    script = tmp_path / "analysis.py"
    script.write_text(_MAIN_SCRIPT.replace("MODE", repr(mode)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert f'File "{script}", line 6, in fail_in_main' in out
    assert 'raise ValueError("failed in __main__")' in out


class _ExitsWhenLoaded:
    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, ("loaded",))


def test_an_exception_that_exits_when_loaded_is_not_rebuilt() -> None:
    failure = TaskFailure(0, "Odd", "odd", exception_pickle=pickle.dumps(_ExitsWhenLoaded()))
    assert failure.exception() is None  # and the caller goes on
    assert RemoteException([failure], [None]).__cause__ is None
