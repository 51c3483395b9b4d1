"""Servers left by a test process that was SIGKILLed, stopped at the next start.

A SIGTERMed pytest unwinds through its fixtures' teardown (tests/conftest.py), but SIGKILL
leaves a loopback sshd or a private SLURM running, in its own session, with its temp dir. Each
server's directory holds an owner file naming the process that started it (pid and start time,
so a reused pid is not taken for the owner). A later start of the same kind of server reaps the
directories whose owner is gone: every process that names the directory on its command line
or in its environment, then the directory. A live owner's servers (another test run) and
directories without an owner file are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

from tests.infra.system import wait_gone

OWNER_FILE = ".remotemap-test-owner"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def mark_owned(directory: Path) -> None:
    """Record this process as the owner of the server living in ``directory``."""
    owner = {"pid": os.getpid(), "start": _start_time(os.getpid())}
    (directory / OWNER_FILE).write_text(json.dumps(owner))


def owner_gone(directory: Path) -> bool:
    """The directory's owner has exited (False when it has no readable owner file)."""
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(_start_time(int(owner["pid"])) != owner["start"])


def processes_naming(text: str) -> list[int]:
    """PIDs (other than this one) whose command line or environment contains ``text``."""
    needle, found = text.encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() or needle in (
                    entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def reap_stale(base: Path, prefix: str) -> list[Path]:
    """SIGKILL what the dead owners' ``base/prefix*`` servers left running; remove their dirs.
    Returns the directories reaped."""
    reaped = []
    for directory in sorted(base.glob(f"{prefix}*")):
        if not directory.is_dir() or not owner_gone(directory):
            continue
        pids = processes_naming(str(directory))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(pids, 10)  # SIGKILL lands asynchronously: let them end before the rmtree
        shutil.rmtree(directory, ignore_errors=True)
        reaped.append(directory)
    return reaped
