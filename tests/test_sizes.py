"""Size limits on the project's own Python: no file over 400 lines, no function over 60
(issue 11, "Size"), in the library, the tests, the benchmarks and the scripts alike.

A file that grows past the limit is split by meaning (each new module named for what it holds),
not by line count; there is no allow-list.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED_DIRS = ("remotemap", "tests", "benchmarks", "scripts")

#: Lines per file. 400 is about what a reader holds in mind as one topic (a few screens); past
#: it, a module has nearly always grown a second topic that deserves its own name.
MAX_FILE_LINES = 400
#: Lines per function, from its ``def`` to its last line, its docstring not counted (a
#: documented function is not punished for its documentation): about one screen, so a
#: function can be read without scrolling.
MAX_FUNCTION_LINES = 60


def python_files() -> list[Path]:
    files = [p for d in CHECKED_DIRS for p in (ROOT / d).rglob("*.py")
             if "__pycache__" not in p.parts]
    return sorted(files)


def function_lengths(source: str) -> list[tuple[int, str, int]]:
    """``(line of the def, qualified name, length)`` of every function and method in
    ``source``, nested ones included (they count in their parent as well)."""
    found: list[tuple[int, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found.append((child.lineno, name, _length(child)))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _length(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert function.end_lineno is not None
    # ``lineno`` is the ``def`` line: decorators above it are not counted.
    length = function.end_lineno - function.lineno + 1
    first = function.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        assert first.end_lineno is not None
        length -= first.end_lineno - first.lineno + 1
    return length


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_checked_directories_hold_python_files() -> None:
    # Guards the two tests below against passing on an empty list (a moved directory).
    found = {p.relative_to(ROOT).parts[0] for p in python_files()}
    assert found == set(CHECKED_DIRS)


def test_no_file_is_over_the_line_limit() -> None:
    over = []
    for path in python_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES:
            over.append(f"{_shown(path)}:1 {lines} lines")
    assert not over, (f"files over {MAX_FILE_LINES} lines (split them by meaning):\n"
                      + "\n".join(over))


def test_no_function_is_over_the_line_limit() -> None:
    over = []
    for path in python_files():
        for line, name, length in function_lengths(path.read_text(encoding="utf-8")):
            if length > MAX_FUNCTION_LINES:
                over.append(f"{_shown(path)}:{line} {name} {length} lines")
    assert not over, (f"functions over {MAX_FUNCTION_LINES} lines, docstring apart:\n"
                      + "\n".join(over))


def test_a_function_is_measured_from_its_def_to_its_end_without_its_docstring() -> None:
    source = textwrap.dedent('''
        import functools

        @functools.cache
        def documented(x):
            """Two lines
            of documentation."""
            y = x + 1
            return y

        class Holder:
            async def method(self):
                def inner():
                    return 1
                return inner()

        def one_line_docstring():
            "one line"
            return 2
    ''')
    assert function_lengths(source) == [
        (5, "documented", 3),  # the decorator above and the two docstring lines apart
        (12, "Holder.method", 4),
        (13, "Holder.method.inner", 2),
        (17, "one_line_docstring", 2),
    ]
