"""remotemap.state: the state home follows XDG_STATE_HOME, run ids sort and differ, and
liveness tells a living process from a dead one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from remotemap.state import new_run_id, pid_alive, state_dir, state_home


def test_state_home_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_home() == tmp_path / "remotemap"
    assert state_dir("workflows") == tmp_path / "remotemap" / "workflows"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_home() == Path.home() / ".local" / "state" / "remotemap"


def test_run_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    stamp, _, tail = ids[0].rpartition("-")
    assert len(tail) == 6 and int(tail, 16) >= 0
    assert all(i.rpartition("-")[0] >= stamp for i in ids)


def test_liveness_of_real_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(1)  # init: another user's (or our own) process exists
    for damaged in (None, "123", 0, -5, True, 1.5):
        assert not pid_alive(damaged)
