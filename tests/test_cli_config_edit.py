# ruff: noqa: F811
"""``remotemap config edit`` as visudo: an invalid edit is never saved without being asked.

The editor is a small shell script that counts its calls and writes an invalid file or a valid
one; the prompt is answered through a real pseudo-terminal, or stdin is not a terminal at all.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

# The fixtures of test_cli.py (every config path in tmp_path), imported for the parameters.
from tests.test_cli import home, write, xdg_file  # noqa: F401

ORIGINAL = "# mine\n[local]\nn_jobs = 2\n"
VALID = "[local]\nn_jobs = 3\n"
# Call 1 appends an unknown section; later calls write VALID, or [bogus] again if ALWAYS_BAD.
# Each call logs its number and whether the file it got holds the previous (invalid) edit.
EDITOR_SCRIPT = """\
n=$(($(cat "$CALLS" 2>/dev/null || echo 0) + 1)); echo $n > "$CALLS"
if grep -q '^\\[bogus\\]' "$1"; then echo "$n got-previous-edit" >> "$LOG"; fi
case "$1" in *.toml) ;; *) echo "$n not-a-toml-name" >> "$LOG";; esac
if [ "$n" -eq 1 ] || [ -n "$ALWAYS_BAD" ]; then printf '[bogus]\\n' >> "$1"
else printf '[local]\\nn_jobs = 3\\n' > "$1"; fi
if [ -n "$TOUCH_ORIGINAL" ]; then printf '# changed meanwhile\\n' >> "$TOUCH_ORIGINAL"; fi
"""


def edit(tmp_path: Path, home: Path, answers: str | None, **env: str) -> tuple[int, str]:
    """Run ``remotemap config edit`` with the script as $EDITOR; (exit status, stderr).

    ``answers`` are typed at a pseudo-terminal that is the command's stdin; None runs it with
    stdin from /dev/null (not a terminal).
    """
    script = tmp_path / "editor.sh"
    script.write_text(EDITOR_SCRIPT)
    environ = {k: v for k, v in os.environ.items()
               if k not in ("REMOTEMAP_CONFIG", "VISUAL", "EDITOR")}
    environ.update(HOME=str(home), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
                   EDITOR=f"sh {shlex.quote(str(script))}", CALLS=str(tmp_path / "calls"),
                   LOG=str(tmp_path / "log"), **env)
    command = [sys.executable, "-m", "remotemap", "config", "edit"]
    if answers is None:
        done = subprocess.run(command, env=environ, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr
    controller, terminal = os.openpty()
    try:
        os.write(controller, answers.encode())  # queued until the command reads its stdin
        done = subprocess.run(command, env=environ, stdin=terminal, capture_output=True,
                              text=True, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    return done.returncode, done.stderr


def calls(tmp_path: Path) -> int:
    return int((tmp_path / "calls").read_text())


def log(tmp_path: Path) -> str:
    path = tmp_path / "log"
    return path.read_text() if path.exists() else ""


def leftovers(xdg_file: Path) -> list[str]:
    return sorted(p.name for p in xdg_file.parent.iterdir()
                  if p.name not in ("config.toml", "config.toml.lock"))


def test_invalid_edit_reopens_the_editor_on_it_then_saves(tmp_path: Path, home: Path,
                                                          xdg_file: Path) -> None:
    write(xdg_file, ORIGINAL)
    status, err = edit(tmp_path, home, "e\n")
    assert status == 0, err
    assert "unknown section [bogus]" in err and "(e)dit again" in err
    assert calls(tmp_path) == 2
    assert "2 got-previous-edit" in log(tmp_path)  # edit again = the same copy, not a fresh one
    assert "not-a-toml-name" not in log(tmp_path)
    assert xdg_file.read_text() == VALID
    assert leftovers(xdg_file) == []


def test_discard_leaves_the_file_untouched(tmp_path: Path, home: Path, xdg_file: Path) -> None:
    write(xdg_file, ORIGINAL)
    xdg_file.chmod(0o640)
    before = xdg_file.stat()
    status, err = edit(tmp_path, home, "?\nd\n", ALWAYS_BAD="1")
    assert status == 1
    assert "please answer e, d or s" in err  # a wrong answer asks again
    assert f"{xdg_file} is left as it was" in err
    assert calls(tmp_path) == 1
    assert xdg_file.read_text() == ORIGINAL
    assert (xdg_file.stat().st_ino, xdg_file.stat().st_mode) == (before.st_ino, before.st_mode)
    assert leftovers(xdg_file) == []


def test_save_anyway_writes_the_invalid_file_and_says_so(tmp_path: Path, home: Path,
                                                         xdg_file: Path) -> None:
    write(xdg_file, ORIGINAL)
    status, err = edit(tmp_path, home, "s\n", ALWAYS_BAD="1")
    assert status == 1
    assert "although it is not valid" in err
    assert xdg_file.read_text() == ORIGINAL + "[bogus]\n"


def test_without_a_terminal_nothing_is_asked_or_saved(tmp_path: Path, home: Path,
                                                      xdg_file: Path) -> None:
    write(xdg_file, ORIGINAL)
    status, err = edit(tmp_path, home, None)
    assert status == 1
    assert "unknown section [bogus]" in err and "(e)dit again" not in err
    assert calls(tmp_path) == 1
    assert xdg_file.read_text() == ORIGINAL
    assert leftovers(xdg_file) == []


def test_end_of_input_at_the_prompt_discards(tmp_path: Path, home: Path, xdg_file: Path) -> None:
    write(xdg_file, ORIGINAL)
    status, _ = edit(tmp_path, home, "\x04")  # ^D at the terminal
    assert status == 1
    assert xdg_file.read_text() == ORIGINAL


def test_a_file_changed_during_the_edit_is_not_overwritten(tmp_path: Path, home: Path,
                                                           xdg_file: Path) -> None:
    write(xdg_file, ORIGINAL)
    status, err = edit(tmp_path, home, "e\n", TOUCH_ORIGINAL=str(xdg_file))
    assert status == 1
    assert "changed while you edited it" in err
    assert xdg_file.read_text().startswith(ORIGINAL + "# changed meanwhile\n")
    kept = xdg_file.with_name("config.toml.edited")
    assert kept.read_text() == VALID  # the user's edit is not lost
    assert leftovers(xdg_file) == ["config.toml.edited"]


def test_a_missing_file_is_created_only_when_saved(tmp_path: Path, home: Path,
                                                   xdg_file: Path) -> None:
    status, _ = edit(tmp_path, home, "d\n", ALWAYS_BAD="1")
    assert status == 1
    assert not xdg_file.exists()
    status, err = edit(tmp_path, home, None)  # call 2 of the script: valid
    assert status == 0, err
    assert xdg_file.read_text() == VALID
    assert (xdg_file.stat().st_mode & 0o777) == 0o600
