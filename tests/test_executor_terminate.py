"""``Executor.terminate_workers``: stop now, as ``ProcessPoolExecutor.terminate_workers``
(Python 3.14) does: pending futures cancelled, running tasks stopped, the executor shut."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from remotemap import Executor, ModeName, RemoteException
from tests import taskfuncs


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
def test_terminate_workers_stops_running_and_cancels_pending(mode: str, tmp_path: Path) -> None:
    with Executor(ModeName(mode), max_workers=2) as executor:
        running = [executor.submit(taskfuncs.sleep_for, i, 60) for i in range(2)]
        pending = [executor.submit(taskfuncs.sleep_for, i, 60) for i in range(2, 6)]
        deadline = time.monotonic() + 30
        while not all(f.running() for f in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        executor.terminate_workers()
        took = time.monotonic() - start
        assert took < 20, f"terminate_workers took {took:.1f} s with 60 s tasks running"
        assert all(f.cancelled() for f in pending)
        for future in running:
            with pytest.raises(RemoteException) as info:
                future.result(timeout=5)
            assert info.value.failures[0].kind == "cancelled"
        with pytest.raises(RuntimeError):
            executor.submit(taskfuncs.sleep_for, 0, 0)
