#!/usr/bin/env python3
"""The constraints files the test command installs from.

    scripts/constraints.py refresh   rewrite constraints.txt with today's newest releases
                                     (a fresh venv, then pip freeze); run the suite after
    scripts/constraints.py oldest    print constraints that pin remotemap's own dependencies
                                     (with its extras, the test libraries included) to the lower
                                     bounds pyproject.toml declares, the rest (the checking tools
                                     among them) as constraints.txt has them

Standard library only (Python >= 3.11 for tomllib): it runs before any venv exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "constraints.txt"
HEADER = """\
# The versions the test command installs (scripts/setup.sh, scripts/test.sh, and the test
# hosts' venvs), so that a release made after a green run cannot turn it red.
# Refresh: scripts/constraints.py refresh (then run the suite).
# scripts/test.sh --newest and --oldest test without this file.
"""
#: Tools that check remotemap's code rather than run it: their oldest releases say nothing
#: about what users may have installed, so --oldest keeps them as pinned.
CHECKERS = {"pytest", "ruff", "mypy", "types-paramiko"}
#: ``name>=version`` (with an optional environment marker) in a requirement string.
_LOWER_BOUND = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*>=\s*([^,;\s]+)[^;]*(;.*)?$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds() -> dict[str, str]:
    """``name -> "name==X[; marker]"`` for each runtime requirement declared as ``>=X``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    pins = {}
    for requirement in requirements:
        found = _LOWER_BOUND.match(requirement)
        if found and normalize(found[1]) not in CHECKERS:
            name, version, marker = found.groups()
            pins[normalize(name)] = f"{name}=={version}{marker or ''}"
    return pins


def oldest() -> str:
    pins = lower_bounds()
    lines = [f"# remotemap's declared lower bounds, else {PINS.name}"]
    for line in PINS.read_text().splitlines():
        name = re.split(r"[=<>!~; ]", line, maxsplit=1)[0]
        if line and not line.startswith("#") and normalize(name) not in pins:
            lines.append(line)
    lines += pins.values()
    return "\n".join(lines) + "\n"


def refresh() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        python = f"{tmp}/venv/bin/python"
        subprocess.run([sys.executable, "-m", "venv", f"{tmp}/venv"], check=True)
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip", "setuptools"], check=True)
        subprocess.run([*pip, f"{REPO}[test,ssh,cluster,bench]"], check=True)
        frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                                check=True, capture_output=True, text=True).stdout
    kept = [line for line in frozen.splitlines()
            if line and normalize(line.split("==")[0]) not in ("remotemap", "wheel")]
    PINS.write_text(HEADER + "\n".join(sorted(kept, key=str.lower)) + "\n")
    print(f"wrote {PINS} ({len(kept)} pins)")


def main(argv: list[str]) -> int:
    if argv == ["oldest"]:
        sys.stdout.write(oldest())
        return 0
    if argv == ["refresh"]:
        refresh()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
