"""Stored runs for real: a caller killed with SIGKILL half-way, then resumed; the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from remotemap import RemoteException, remote_map
from remotemap.runs import RunStore
from tests import taskfuncs as tf

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from remotemap import remote_map

    def task(counter_dir, i):
        Path(counter_dir, f"{i}.{os.getpid()}.{time.monotonic_ns()}").touch()
        time.sleep(0.3)
        return i * i

    counter_dir, run_dir, mode = sys.argv[1:4]
    options = {} if mode == "serial" else {"n_jobs": 2}
    print(remote_map(task, [(counter_dir, i) for i in range(24)], mode=mode, run_dir=run_dir,
                     progress=False, **options))
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.parametrize("mode", ["serial", "local", "local_with_dumps"])
def test_caller_killed_half_way_then_resumed(tmp_path: Path, mode: str) -> None:
    counters, run_dir, script = tmp_path / "counters", tmp_path / "run", tmp_path / "job.py"
    counters.mkdir()
    script.write_text(SCRIPT)
    argv = [sys.executable, str(script), str(counters), str(run_dir), mode]
    # A caller killed by SIGKILL cannot remove its private local_with_dumps directory: its temp
    # dir is the test's, so that what it leaves goes with tmp_path, not into the system's.
    (temp := tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while not RunStore.exists_at(run_dir) or len(list(RunStore.existing(run_dir).outcomes())) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    task_pids = {int(p.name.split(".")[1]) for p in counters.iterdir()} - {proc.pid}
    done_before = set(RunStore.existing(run_dir).load().values)
    assert 0 < len(done_before) < 24

    finished = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == str([i * i for i in range(24)])
    runs: dict[int, int] = {}
    for path in counters.iterdir():
        index = int(path.name.split(".")[0])
        runs[index] = runs.get(index, 0) + 1
    assert all(runs[i] == 1 for i in done_before), "a completed task ran again"
    assert sorted(runs) == list(range(24))  # nothing lost
    assert RunStore.existing(run_dir).meta()["state"] == "done"
    give_up = time.monotonic() + 10
    while any(_alive(pid) for pid in task_pids) and time.monotonic() < give_up:
        time.sleep(0.05)
    assert [pid for pid in task_pids if _alive(pid)] == [], "the killed run left processes"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remotemap", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_runs_retry_and_clean_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = {**os.environ}
    counters, broken = tmp_path / "counters", tmp_path / "broken"
    counters.mkdir()
    broken.touch()
    largs = [(str(counters), i, str(broken) if i == 1 else "") for i in range(3)]
    with pytest.raises(RemoteException) as info:
        remote_map(tf.count_runs, largs, mode="local_with_dumps", run_dir=tmp_path / "r1")
    assert "remotemap retry" in str(info.value)
    run_id = RunStore.existing(tmp_path / "r1").meta()["id"]

    listed = _cli("runs", env=env)
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if line.startswith(run_id))
    assert line.split()[3:7] == ["failed", "2", "1", "0"]  # state, ok, failed, pending

    still = _cli("retry", run_id, env=env)
    assert still.returncode == 1 and "task 1" in still.stderr
    broken.unlink()
    fixed = _cli("retry", run_id, "--mode", "serial", env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert "all 3 tasks ok" in fixed.stdout
    assert sorted(p.name.split(".")[0] for p in counters.iterdir()) == ["0", "1", "1", "1", "2"]

    assert _cli("retry", "no-such-run", env=env).returncode == 1
    cleaned = _cli("clean", "--older-than", "0", env=env)
    assert cleaned.returncode == 0 and f"removed {run_id}" in cleaned.stdout
    assert not (tmp_path / "r1").exists()
    assert "no stored runs" in _cli("runs", env=env).stdout
