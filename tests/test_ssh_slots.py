"""The ssh mode with chunks queued ahead on the host's worker server (``tune``): each slot's
next chunk waits there and starts as the slot frees, and small outcomes come back with their
``done`` line. What a slow link or a crash must not change: results in order, a crash failing
its own chunk only, a timeout counted from a chunk's start."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import RemoteException, remote_map
from tests.infra.sshd import SSHServer

pytestmark = pytest.mark.ssh

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _options(server: SSHServer, python: Path, **more: Any) -> dict[str, Any]:
    return {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
            "python": str(python), "progress": False, "chunksize": 1, **more}


def _killed_on_two(x: int) -> tuple[int, int]:
    """(x, this task's pid); task 2 dies by SIGKILL."""
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x, os.getpid()


def _big(x: int) -> bytes:
    return bytes([x]) * (300 << 10)  # above the inline limit: its outcome is downloaded


def _nap(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def test_the_chunk_queued_behind_a_crashed_one_still_runs_with_its_own_result(
        sshd_host: SSHServer, remote_python: Path) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(_killed_on_two, [(i,) for i in range(6)], mode="ssh",
                   **_options(sshd_host, remote_python, n_jobs=1))
    (crashed,) = info.value.failures
    assert crashed.index == 2 and crashed.kind == "crash" and "SIGKILL" in crashed.message
    results = info.value.results
    assert [r if r is None else r[0] for r in results] == [0, 1, None, 3, 4, 5]
    assert len({r[1] for r in results if r is not None}) == 5  # a process of its own each


def test_outcomes_above_the_inline_limit_and_below_it_both_come_back(
        sshd_host: SSHServer, remote_python: Path) -> None:
    got = remote_map(_big, [(i,) for i in range(4)], mode="ssh",
                     **_options(sshd_host, remote_python, n_jobs=2))
    assert got == [bytes([i]) * (300 << 10) for i in range(4)]
    small = remote_map(_nap, [(i, 0.0) for i in range(4)], mode="ssh",
                       **_options(sshd_host, remote_python, n_jobs=2))
    assert small == [0, 1, 2, 3]


def test_a_timeout_counts_from_the_chunks_start_not_from_its_queueing(
        sshd_host: SSHServer, remote_python: Path) -> None:
    # One slot, one chunk queued ahead: each is sent as the one before starts, so it waits
    # ~0.6 s and then runs 0.6 s, past the 1 s timeout if counted from its sending; counted
    # from its start, 0.4 s are left.
    got = remote_map(_nap, [(i, 0.6) for i in range(3)], mode="ssh", timeout=1.0,
                     **_options(sshd_host, remote_python, n_jobs=1))
    assert got == [0, 1, 2]
