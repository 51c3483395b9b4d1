"""``local`` runs a call's first chunk in a child forked from the caller (no pool to start):
only when fork is safe, with the same failure records as a pool worker, and Ctrl-C stops it.

Each case runs in a fresh interpreter: the test process has threads and a worker pool already,
which (rightly) rule fork out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from remotemap.backends.local_fork import fork_is_safe
from tests.test_interrupt import _alive, _signal_when_running, caller_script

ROOT = str(Path(__file__).resolve().parents[1])

#: Prints, as JSON: the values or failures, and whether a pool worker was ever started.
_CALLER = """
import json, os, sys, threading
from remotemap import RemoteException, remote_map
from tests import taskfuncs as tf

{setup}
try:
    out = {{"values": remote_map({call}, mode="local", n_jobs=2, progress=False)}}
except RemoteException as exc:
    out = {{"failures": [[f.index, f.kind, f.message] for f in exc.failures],
            "results": exc.results}}
out["pool_started"] = "loky.backend.popen_loky_posix" in sys.modules  # a worker started
out["caller_pid"] = os.getpid()
out["plugin_loaded"] = "remotemap.backends.dask" in sys.modules
print(json.dumps(out))
"""


def _call(tmp_path: Path, call: str, setup: str = "") -> dict[str, Any]:
    script = tmp_path / "caller.py"
    script.write_text(_CALLER.format(call=call, setup=textwrap.dedent(setup)))
    env = {**os.environ, "PYTHONPATH": ROOT, "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("REMOTEMAP_CONFIG", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_one_chunk_call_runs_in_a_forked_child_without_starting_the_pool(
        tmp_path: Path) -> None:
    out = _call(tmp_path, "lambda x: (x + 1, os.getpid()), [(41,)]")
    [[value, pid]] = out["values"]
    assert value == 42
    assert pid != out["caller_pid"], "the task ran in the caller's own process"
    assert out["pool_started"] is False
    # The config of a local run is read without loading every installed mode's section.
    assert out["plugin_loaded"] is False


def test_first_chunk_forked_and_the_rest_in_the_pool_keep_their_order(tmp_path: Path) -> None:
    out = _call(tmp_path, "lambda x: (x * x, os.getpid()), [(i,) for i in range(12)], "
                          "chunksize=3")
    assert [value for value, _ in out["values"]] == [i * i for i in range(12)]
    pids = {pid for _, pid in out["values"]}
    assert out["caller_pid"] not in pids
    # The first chunk in the forked child, the others in the pool's workers.
    [forked] = {pid for _, pid in out["values"][:3]}
    assert forked not in {pid for _, pid in out["values"][3:]}
    assert out["pool_started"] is True


def test_crash_in_the_forked_chunk_fails_that_task_alone(tmp_path: Path) -> None:
    for how, words in (("exit", "exited with code 3"), ("sigkill", "SIGKILL")):
        out = _call(tmp_path, f"tf.crash_on, [(i, {how!r}) for i in range(5)], chunksize=5")
        [[index, kind, message]] = out["failures"]
        assert (index, kind) == (3, "crash"), out
        assert words in message
        assert out["results"] == [0, 1, 2, None, 4]
        assert out["pool_started"] is False, "the chunk did not run in a forked child"


def test_result_that_cannot_be_pickled_fails_its_task(tmp_path: Path) -> None:
    out = _call(tmp_path, "tf.odd_value_on, [(i, 'exit_on_pickle') for i in range(3)], "
                          "chunksize=3")
    [[index, kind, message]] = out["failures"]
    assert (index, kind) == (1, "pickling"), out
    assert "result of task 1 cannot be pickled" in message
    assert out["results"] == [0, None, 2]
    assert out["pool_started"] is False


def test_fork_refused_while_other_threads_run(tmp_path: Path) -> None:
    setup = """
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    """
    out = _call(tmp_path, "tf.square, [(3,)]", setup)
    assert out["values"] == [9]
    assert out["pool_started"] is True, "forked although another thread was running"


def test_fork_is_safe_only_with_one_thread() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert fork_is_safe() is False
    finally:
        stop.set()
        thread.join()


_ONE_TASK = caller_script(
    """
    marker_dir = sys.argv[1]
    """,
    """
    remote_map(task, [(marker_dir, 0), (marker_dir, 1)], mode="local", n_jobs=2,
               chunksize=2, progress=False)
    """)


def test_ctrl_c_stops_the_forked_child(tmp_path: Path) -> None:
    """One chunk of two tasks, so the forked child runs them both: the first task's pid file
    is written by it, the second never starts; a Ctrl-C then stops the child."""
    markers = tmp_path / "markers"
    markers.mkdir()
    script = tmp_path / "interrupted.py"
    script.write_text(_ONE_TASK)
    (markers / "0.pid").touch()  # _signal_when_running waits for two: ours is the other one
    env = {**os.environ, "PYTHONPATH": ROOT, "XDG_CONFIG_HOME": str(tmp_path)}
    stopped = _signal_when_running([sys.executable, str(script), str(markers)], markers,
                                   signal.SIGINT, env=env)
    assert stopped.returncode == 130, stopped.err
    assert "KeyboardInterrupt reached the caller" in stopped.out
    assert stopped.seconds < 5, f"took {stopped.seconds:.1f} s to stop"
    [child] = [pid for pid in stopped.task_pids if pid != 0]
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the forked child is still running"


def test_a_call_inside_the_forked_task_counts_its_share_of_the_cpus(tmp_path: Path) -> None:
    """n_jobs=2: a task's own calls count half the CPUs as "all" (config.SHARED_BY_ENV), so nested
    calls do not start CPUs x CPUs processes; an explicit n_jobs is kept."""
    from loky import cpu_count

    share = max(1, cpu_count() // 2)
    [[auto, explicit, workers]] = _call(tmp_path, "tf.cpus_seen, [(0,)]")["values"]
    assert (auto, explicit) == (share, 3)
    assert workers <= share + 1  # its pool, and the child its first chunk forked


def test_the_forked_child_counts_as_one_of_the_n_jobs_workers(tmp_path: Path) -> None:
    """The first chunk runs in a forked child while the pool starts: meanwhile the pool runs
    one chunk fewer, so no more than n_jobs=2 tasks ever run at once."""
    from tests.taskfuncs import most_at_once

    # The forked task outlasts the pool's start (~0.3 s), which then runs the others.
    out = _call(tmp_path, "tf.busy_span, [(i, 1.5 if i == 0 else 0.3) for i in range(6)], "
                          "chunksize=1")
    spans = [tuple(span) for span in out["values"]]
    assert most_at_once(spans) <= 2  # 3 before: the child and the pool's two workers
    assert spans[0][0] != out["caller_pid"]  # the first task ran in a child
