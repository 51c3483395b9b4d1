"""``remotemap config edit``: edit a copy, validate it, and only then replace the file.

As visudo does: the editor works on a temporary copy beside the file; an invalid result is
reported and, at a terminal, the user chooses to edit it again, discard it or save it anyway.
Without a terminal there is nobody to ask: the file is left as it was and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from remotemap.config import config_path
from remotemap.config.editing import atomic_write, example_text
from remotemap.config.loader import parse_toml, read_document, validate_document
from remotemap.config.lock import locked
from remotemap.errors import ConfigError

PROMPT = "What now? (e)dit again, (d)iscard your changes, (s)ave anyway: "


def _problem(text: str, path: Path) -> ConfigError | None:
    """Why ``text`` is not a valid config file (errors name ``path``), or None if it is."""
    try:
        validate_document(parse_toml(text, path), path)
    except ConfigError as exc:
        return exc
    return None


def _run_editor(copy: Path) -> str | None:
    """Open ``copy`` in $VISUAL / $EDITOR / vi; the error to report, or None when it went well."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        status = subprocess.run([*shlex.split(editor), str(copy)], check=False).returncode
    except OSError as exc:
        return f"cannot run the editor {editor!r}: {exc}"
    return None if status == 0 else f"the editor {editor!r} exited with status {status}"


def _ask() -> str:
    """The user's choice at the prompt: "e", "d" or "s" (end of input counts as "d")."""
    while True:
        print(PROMPT, end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            print(file=sys.stderr)
            return "d"
        choice = answer.strip().lower()[:1]
        if choice in ("e", "d", "s"):
            return choice
        print("please answer e, d or s", file=sys.stderr)


def _edit_loop(path: Path, copy: Path) -> tuple[str, ConfigError | None]:
    """Edit ``copy`` until it is valid or the user gives up: ("save" | "discard", the problem)."""
    while True:
        failed = _run_editor(copy)
        if failed is not None:
            print(f"remotemap: error: {failed}; {path} is left as it was", file=sys.stderr)
            return "discard", None
        problem = _problem(read_document(copy), path)
        if problem is None:
            return "save", None
        print(f"remotemap: error: the edited file is not valid: {problem}", file=sys.stderr)
        if not sys.stdin.isatty():  # nobody to ask: never loop, never save an invalid file
            return "discard", problem
        choice = _ask()
        if choice != "e":
            return ("save" if choice == "s" else "discard"), problem


def cmd_edit(args: argparse.Namespace) -> int:
    path, _ = config_path(args.config)
    existed = path.exists()
    original = read_document(path) if existed else example_text()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Beside the file, ending in .toml so the editor highlights TOML; mkstemp makes it 0600.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.edit-", suffix=".toml")
    copy = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(original)
        outcome, problem = _edit_loop(path, copy)
        if outcome == "discard":
            if problem is not None:
                print(f"remotemap: {path} is left as it was", file=sys.stderr)
            return 1
        return _save(path, copy, original if existed else None, problem)
    finally:
        with contextlib.suppress(OSError):
            copy.unlink()


def _save(path: Path, copy: Path, original: str | None, problem: ConfigError | None) -> int:
    """Write the edited ``copy`` unless the file changed on disk while it was being edited."""
    text = read_document(copy)
    with locked(path):
        now = read_document(path) if path.exists() else None
        if now != original:  # another `config set` or editor wrote it: keep both, ask
            kept = path.with_name(f"{path.name}.edited")
            os.replace(copy, kept)
            print(f"remotemap: error: {path} changed while you edited it; it is left as it is "
                  f"and your edit is kept in {kept}", file=sys.stderr)
            return 1
        if text != original:
            atomic_write(path, text)
    if problem is not None:
        print(f"remotemap: saved {path} although it is not valid: runs will fail until it is "
              "fixed", file=sys.stderr)
        return 1
    print(f"{path}: valid" if original is not None else f"created {path}: valid")
    return 0
