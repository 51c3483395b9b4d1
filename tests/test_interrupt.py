"""Ctrl-C on a real ``python`` process running remote_map: it stops in time and leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_TASK = textwrap.dedent(
    """
    def task(marker_dir, i):
        open(os.path.join(marker_dir, f"{os.getpid()}.pid"), "w").close()
        time.sleep(60)
        return i

    """
)


def caller_script(setup: str, call: str, *, imports: str = "from remotemap import remote_map"
                  ) -> str:
    """A caller whose tasks leave a pid file in ``marker_dir`` and sleep: ``setup`` reads the
    command line, ``call`` runs the tasks; Ctrl-C reaching it is printed, and exits with 130."""
    return (f"import os, sys, time\n{imports}\n" + _TASK + textwrap.dedent(setup).lstrip()
            + "try:\n" + textwrap.indent(textwrap.dedent(call).lstrip(), "    ")
            + "except KeyboardInterrupt:\n"
            + '    print("KeyboardInterrupt reached the caller", flush=True)\n'
            + "    sys.exit(130)\n")


SCRIPT = caller_script(
    """
    marker_dir, run_dir, mode = sys.argv[1:4]
    options = {"temp_dir": run_dir} if mode == "local_with_dumps" else {}
    """,
    """
    remote_map(task, [(marker_dir, i) for i in range(8)], mode=mode, n_jobs=2,
               progress=False, **options)
    """)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not a leftover process, it only waits to be reaped
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Stopped:
    """How a real caller process ended after a signal sent once its tasks were running."""

    returncode: int
    out: str
    err: str
    seconds: float  # from the signal to the exit
    task_pids: list[int]

    def leftover_tasks(self) -> list[int]:
        """Task processes still alive (after giving them a few seconds to go)."""
        give_up = time.monotonic() + 5
        while any(_alive(pid) for pid in self.task_pids) and time.monotonic() < give_up:
            time.sleep(0.05)
        return [pid for pid in self.task_pids if _alive(pid)]


def _signal_when_running(argv: list[str], markers: Path, sig: int,
                         env: dict[str, str] | None = None) -> Stopped:
    """Run ``argv``; once two tasks wrote their pid files in ``markers``, send ``sig``."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(markers.glob("*.pid"))) < 2:
            assert time.monotonic() < deadline, "the tasks never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        task_pids = [int(p.stem) for p in markers.glob("*.pid")]
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Stopped(proc.returncode, out, err, took, task_pids)


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_workers_and_cleans_up(tmp_path: Path, mode: str, sig: int) -> None:
    markers, run_dir = tmp_path / "markers", tmp_path / "runs"
    markers.mkdir()
    script = tmp_path / "interrupted.py"
    script.write_text(SCRIPT)
    stopped = _signal_when_running([sys.executable, str(script), str(markers), str(run_dir),
                                    mode], markers, sig)
    if sig == signal.SIGINT:
        assert stopped.returncode == 130, stopped.err
        assert "KeyboardInterrupt reached the caller" in stopped.out
    else:
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.err  # unwound, not killed
    assert stopped.seconds < 5, f"took {stopped.seconds:.1f} s to stop"
    assert stopped.leftover_tasks() == [], "task processes left running"
    if mode == "local_with_dumps":
        assert list(run_dir.iterdir()) == [], "run directory left behind"


SSH_SCRIPT = caller_script(
    """
    marker_dir = sys.argv[1]
    """,
    """
    remote_map(task, [(marker_dir, i) for i in range(8)], mode="ssh", n_jobs=2,
               progress=False)
    """)


def test_interrupt_stops_remote_tasks_and_removes_remote_files(
        sshd_host: Any, remote_python: Path, shared_dir: Path, tmp_path: Path) -> None:
    remote_dir = f".cache/rm-interrupt-{os.getpid()}"
    config = tmp_path / "config.toml"
    config.write_text(f'[ssh]\nhosts = ["{sshd_host.alias}"]\nssh_config = '
                      f'"{sshd_host.ssh_config}"\npython = "{remote_python}"\n'
                      f'remote_dir = "{remote_dir}"\n')
    script = tmp_path / "interrupted_ssh.py"
    script.write_text(SSH_SCRIPT)
    stopped = _signal_when_running([sys.executable, str(script), str(shared_dir)], shared_dir,
                                   signal.SIGINT,
                                   env={**os.environ, "REMOTEMAP_CONFIG": str(config)})
    assert stopped.returncode == 130, stopped.err
    assert "KeyboardInterrupt reached the caller" in stopped.out
    assert stopped.seconds < 5, f"took {stopped.seconds:.1f} s to stop"
    assert stopped.leftover_tasks() == [], "remote tasks left running"
    assert list((sshd_host.user.home / remote_dir).iterdir()) == [], "remote run files left"


EXECUTOR_SCRIPT = caller_script(
    """
    marker_dir, mode = sys.argv[1:3]
    """,
    """
    with Executor(mode, n_jobs=2) as ex:
        futures = [ex.submit(task, marker_dir, i) for i in range(6)]
        print([f.result() for f in futures])
    """, imports="from remotemap import Executor")


@pytest.mark.parametrize("mode", ["local", "local_with_dumps"])
def test_interrupt_while_waiting_on_futures(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "futures.py"
    script.write_text(EXECUTOR_SCRIPT)
    stopped = _signal_when_running([sys.executable, str(script), str(tmp_path), mode], tmp_path,
                                   signal.SIGINT)
    assert stopped.returncode == 130, stopped.err
    assert "KeyboardInterrupt reached the caller" in stopped.out
    assert stopped.seconds < 5
    assert stopped.leftover_tasks() == []


CLUSTER_SCRIPT = caller_script(
    """
    marker_dir, shared_dir = sys.argv[1:3]
    """,
    """
    remote_map(task, [(marker_dir, i) for i in range(4)], mode="cluster",
               scheduler="local", shared_dir=shared_dir, progress=False)
    """)


CLUSTER_WORKFLOW_SCRIPT = caller_script(
    """
    marker_dir, shared_dir = sys.argv[1:3]
    wf = Workflow("interrupted")
    first = wf.add_step(task, marker_dir, 0, prerequisites=[])
    second = wf.add_step(task, marker_dir, 1, prerequisites=[])
    wf.add_step(task, marker_dir, Result(first), prerequisites=[first, second])
    """,
    """
    wf.run("cluster", scheduler="local", shared_dir=shared_dir)
    """, imports="from remotemap import Result, Workflow")


@pytest.mark.parametrize("script_text", [CLUSTER_SCRIPT, CLUSTER_WORKFLOW_SCRIPT],
                         ids=["remote_map", "workflow"])
def test_interrupt_cancels_cluster_jobs(tmp_path: Path, script_text: str) -> None:
    from tests.slurm_fixtures import require_soma_workflow

    require_soma_workflow()
    markers, shared = tmp_path / "markers", tmp_path / "shared"
    markers.mkdir()
    script = tmp_path / "cluster_job.py"
    script.write_text(script_text)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    stopped = _signal_when_running([sys.executable, str(script), str(markers), str(shared)],
                                   markers, signal.SIGINT, env=env)
    assert stopped.returncode == 130, stopped.err
    assert "KeyboardInterrupt reached the caller" in stopped.out
    assert stopped.seconds < 15, f"took {stopped.seconds:.1f} s to stop"
    assert stopped.leftover_tasks() == [], "cluster jobs left running"
    assert list(shared.iterdir()) == [], "the cluster run directory was left behind"
