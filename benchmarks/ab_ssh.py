"""The ``ssh_cpu`` probe of :mod:`benchmarks.ab`: 8 tasks of 0.5 s CPU over ssh, 2 workers.

Needs root: it starts the tests' loopback sshd for their login user, whose venv gets the
checkout under test installed (one venv per checkout digest, as the ssh tests do). Each task
burns 0.5 s of its own CPU time (``time.thread_time``, not a loop calibrated beforehand, which
a loaded machine would miscount), so 8 of them on 2 cores need 2.0 s at best.

A speedup cannot be read honestly on a shared 2-core machine: the other programs' load
stretches every task. So the probe reports the overhead itself, in seconds, two ways:

* ``over_ideal_s``: elapsed minus the ideal 2.0 s;
* ``non_task_s``: elapsed minus half the tasks' summed wall time (as the tasks saw it, load
  included): the time the two workers were not running a task.

``ssh_cpu`` times cold calls (a checkout that keeps hosts warm, ``ssh.keep_alive``, has its
warm hosts closed before each call); ``ssh_cpu_warm`` makes one call first, untimed, and times
the calls after it, which find the host's connection and worker server up (dask's
``SSHCluster`` "once its workers run"; a checkout without warm hosts is cold every time).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

CPU_TASKS = 8
CPU_SECONDS = 0.5
CALLS = 2


def burn(seconds: float) -> tuple[float, float]:
    """Spend ``seconds`` of this thread's CPU time; (wall start, wall end)."""
    started, cpu = time.time(), time.thread_time()
    total = 0
    while time.thread_time() - cpu < seconds:
        for i in range(2_000):
            total += i * i % 7
    return started, time.time()


def nap(seconds: float) -> tuple[float, float]:
    """Sleep ``seconds``; (wall start, wall end)."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time()


def _close_warm_hosts() -> None:
    """Close the warm hosts, where the checkout under test keeps any."""
    try:
        from remotemap.backends.ssh_warm import POOL
    except ImportError:
        return
    POOL.close_all()


def probe_ssh_cpu(tree: str, warm: bool = False, sleep: bool = False) -> dict[str, Any]:
    """The median over ``CALLS`` calls, end to end (connect, start, run, fetch, clean up);
    ``warm``: after a first call, untimed, whose host stays warm for them; ``sleep``: tasks
    that sleep (``nap``) instead of burning CPU."""
    from benchmarks.ab import use_tree

    use_tree(tree)
    import cloudpickle

    from remotemap import remote_map
    from tests.infra.login_user import ensure_test_user, install_remotemap_for_user
    from tests.infra.ssh_server import SSHServer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the host lacks benchmarks
    user = ensure_test_user()
    python = str(install_remotemap_for_user(user, Path(tree)))
    task = nap if sleep else burn
    elapsed: list[float] = []
    non_task: list[float] = []
    with SSHServer(user) as server:
        options: dict[str, Any] = {"hosts": [server.alias], "n_jobs": 2, "progress": False,
                                   "ssh_config": str(server.ssh_config), "python": python}
        if warm:
            remote_map(task, [(CPU_SECONDS,)] * CPU_TASKS, mode="ssh", **options)
        for _ in range(CALLS):
            if not warm:
                _close_warm_hosts()
            started = time.perf_counter()
            spans = remote_map(task, [(CPU_SECONDS,)] * CPU_TASKS, mode="ssh", **options)
            took = time.perf_counter() - started
            elapsed.append(took)
            non_task.append(took - sum(end - start for start, end in spans) / 2)
    ideal = CPU_TASKS * CPU_SECONDS / 2
    return {"elapsed_s": statistics.median(elapsed),
            "over_ideal_s": statistics.median(elapsed) - ideal,
            "non_task_s": statistics.median(non_task),
            "speedup": CPU_TASKS * CPU_SECONDS / statistics.median(elapsed)}
