"""Fingerprints of functions and tasks: the same in every process, different for any change."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from remotemap.fingerprint import function_fingerprint, task_fingerprint

# A module with what made cloudpickle's bytes differ from one process to the next: a class
# defined in it (pickled with a random id), sets of strings (ordered by string hashes).
SOURCE = textwrap.dedent(
    """
    SCALE = 3
    NAMES = {"alpha", "beta", "gamma", "delta"}

    class Box:
        def __init__(self, value):
            self.value = value

    def helper(x):
        return x in {"a", "b", "c"}

    def f(x, tags=frozenset({"p", "q", "r", "s"})):
        return Box(x * SCALE), helper(x), sorted(NAMES), tags
    """
)
PRINT = "from remotemap.fingerprint import function_fingerprint as fp\nprint(fp(f))\n"


def _in_fresh_interpreters(argv: list[str], cwd: Path) -> set[str]:
    printed = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        printed.add(done.stdout.strip())
    return printed


def test_a_main_script_function_has_one_fingerprint_in_every_process(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(SOURCE + PRINT)
    printed = _in_fresh_interpreters([sys.executable, "job.py"], tmp_path)
    assert len(printed) == 1 and printed.pop().startswith("__main__.f:")


def test_an_importable_function_has_one_fingerprint_in_every_process(tmp_path: Path) -> None:
    (tmp_path / "analysis.py").write_text(SOURCE)
    code = "from analysis import f\n" + PRINT
    printed = _in_fresh_interpreters([sys.executable, "-c", code], tmp_path)
    assert len(printed) == 1 and printed.pop().startswith("analysis.f:")


def _load(source: str, name: str = "__main__") -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("old, new", [
    ("return Box(x * SCALE)", "return Box(x * SCALE + 1)"),  # the body
    ("return x in {\"a\", \"b\", \"c\"}", "return x in {\"a\", \"b\"}"),  # a helper it calls
    ("SCALE = 3", "SCALE = 4"),  # a global it reads
    ('frozenset({"p", "q", "r", "s"})', 'frozenset({"p"})'),  # a default
    ("self.value = value", "self.value = -value"),  # a class it uses
])
def test_any_change_in_what_a_function_computes_with_changes_it(old: str, new: str) -> None:
    assert new not in SOURCE and old in SOURCE
    before = function_fingerprint(_load(SOURCE).f)
    assert function_fingerprint(_load(SOURCE.replace(old, new)).f) != before


def test_moving_a_function_or_renaming_its_file_does_not_change_it() -> None:
    module = _load(SOURCE)
    moved = _load("\n\n\n# a comment\n" + SOURCE)
    assert function_fingerprint(module.f) == function_fingerprint(moved.f)
    assert function_fingerprint(module.f) != function_fingerprint(module.helper)


def test_closures_partials_methods_and_callable_objects_count_their_state() -> None:
    def make(k: int) -> Any:
        return lambda x: x + k

    assert function_fingerprint(make(1)) == function_fingerprint(make(1))
    assert function_fingerprint(make(1)) != function_fingerprint(make(2))
    assert function_fingerprint(functools.partial(pow, 2)) != \
        function_fingerprint(functools.partial(pow, 3))
    module = _load(SOURCE + "\nclass Scaler:\n    def __init__(self, k):\n        self.k = k\n"
                   "    def __call__(self, x):\n        return x * self.k\n")
    assert function_fingerprint(module.Scaler(2)) != function_fingerprint(module.Scaler(3))
    assert function_fingerprint(module.Scaler(2).__call__) == \
        function_fingerprint(module.Scaler(2).__call__)


def test_task_fingerprints_are_of_the_call_not_of_its_spelling() -> None:
    assert task_fingerprint((1, {"b", "a"}), {"x": 1, "y": 2}) == \
        task_fingerprint((1, {"a", "b"}), {"y": 2, "x": 1})
    assert task_fingerprint((1,), {}) != task_fingerprint((1.0,), {})
    assert task_fingerprint(([1, 2],), {}) != task_fingerprint(((1, 2),), {})
    assert task_fingerprint((Path("a"),), {}) != task_fingerprint((Path("b"),), {})
    lock = threading.Lock()  # nothing describes it: its task never matches a stored one
    assert task_fingerprint((lock,), {}) != task_fingerprint((lock,), {})
