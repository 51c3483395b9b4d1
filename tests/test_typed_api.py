"""The typed API: what type checkers are told agrees with what runs, and mypy refuses typos.

``tests/typing/check_api.py`` lists calls with the types they give and calls a type checker
must refuse (each marked ``# type: ignore[CODE]``). The test command's mypy run checks it as
it is (``warn_unused_ignores``: a refused call that became accepted fails); here mypy also runs
on a copy without the markers, and every marked line must be refused with its code, and no
other line at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from remotemap.call_options import NONE_MEANS_CONFIGURED, BuiltinModeOptions, Mode
from remotemap.config import Config
from remotemap.config.declarations import Key
from remotemap.config.modes import BUILTIN_MODES
from remotemap.config.schema import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
CHECK_FILE = ROOT / "tests" / "typing" / "check_api.py"
MARK = re.compile(r"\s*# type: ignore\[([a-z-]+)\]")
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def test_mode_lists_exactly_the_builtin_modes() -> None:
    assert typing.get_args(Mode) == tuple(BUILTIN_MODES)


def _expected_type(key: Key) -> Any:
    base: Any = {"int": int, "float": float, "bool": bool, "str": str,
                 "list[str]": list[str]}[key.type]
    if key.choices is not None and not callable(key.choices):
        return Literal[tuple(key.choices)]
    if key.is_path:
        return str | os.PathLike[str]
    return base


def test_builtin_mode_options_are_the_sections_keys_with_their_types() -> None:
    hints = typing.get_type_hints(BuiltinModeOptions, localns={"Config": Config})
    declared: dict[str, Key] = {}
    for mode in BUILTIN_MODES:
        section = SCHEMA.get(mode)
        for key in section.keys if section is not None else ():
            declared.setdefault(key.name, key)
    assert set(hints) - {"config"} == set(declared)
    expected = {name: _expected_type(key) | None if name in NONE_MEANS_CONFIGURED
                else _expected_type(key) for name, key in declared.items()}
    wrong = {name: (hints[name], expected[name]) for name in declared
             if hints[name] != expected[name]}
    assert not wrong, f"typed as (in call_options, in the config section): {wrong}"


def _run_mypy(*files: Path) -> list[tuple[str, int, str]]:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--follow-imports", "silent", "--no-error-summary", "--show-error-codes",
         "--hide-error-context", "--no-pretty", *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    errors = [m for m in map(ERROR.match, result.stdout.splitlines()) if m]
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return [(Path(m["path"]).name, int(m["line"]), m["code"]) for m in errors]


@pytest.mark.slow
def test_mypy_refuses_each_marked_call_and_nothing_else(tmp_path: Path) -> None:
    lines = CHECK_FILE.read_text().splitlines()
    expected = {(n, m[1]) for n, line in enumerate(lines, 1) if (m := MARK.search(line))}
    assert len(expected) > 20  # the file still lists the refused calls
    stripped = tmp_path / "check_api_unmarked.py"
    stripped.write_text("\n".join(MARK.sub("", line) for line in lines) + "\n")
    errors = _run_mypy(CHECK_FILE, stripped)
    assert [e for e in errors if e[0] == CHECK_FILE.name] == []  # as it is: clean
    got = {(line, code) for name, line, code in errors if name == stripped.name}
    assert got == expected
