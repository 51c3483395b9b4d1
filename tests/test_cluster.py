"""Mode ``cluster``: real soma-workflow, real jobs with its local scheduler; what is sent to a
scheduler. SLURM and a remote submitting host: tests/test_cluster_slurm.py; how a job's end is
judged: tests/test_cluster_verdict.py.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, remote_map
from remotemap.api import make_backend
from remotemap.backends.cluster import ClusterBackend, collect, submit
from remotemap.backends.cluster.checks import DEFAULT_SLURM_CONFS
from remotemap.backends.cluster.registry import registered
from remotemap.backends.cluster.settings import native_options, walltime_seconds
from remotemap.backends.cluster.swf import slurm_script
from remotemap.backends.cluster.verdict import parse_sacct
from remotemap.config import load_config
from remotemap.errors import BackendUnavailable
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import env_for_children, no_engine_left, round_status, wait_for
from tests.slurm_fixtures import require_soma_workflow

# The shared fixtures, module-scoped per test module (see tests/cluster_support.py).
state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
local = cluster_support.local


# -- unit-level: what is sent to the scheduler ---------------------------------------------------
def test_walltime_formats() -> None:
    assert [walltime_seconds(t) for t in ("5", "5:30", "1:00:00", "2-3", "1-0:10", "0-0:0:9")] \
        == [300, 330, 3600, 2 * 86400 + 3 * 3600, 86400 + 600, 9]
    with pytest.raises(ValueError, match=r"cluster\.walltime"):
        walltime_seconds("ten minutes")


def test_native_options_per_scheduler() -> None:
    base = {"walltime": "1:30:00", "memory": "2G", "cpus_per_task": 4,
            "native_options": ["--account=proj"]}
    options, keys = native_options({**base, "scheduler": "slurm"})
    assert options == ["--time=1:30:00", "--mem=2G", "--cpus-per-task=4", "--account=proj"]
    assert keys == ["cluster.walltime", "cluster.memory", "cluster.cpus_per_task",
                    "cluster.native_options"]
    pbs, _ = native_options({**base, "scheduler": "pbspro"})
    assert pbs == ["-l walltime=01:30:00", "-l mem=2G", "-l ncpus=4", "--account=proj"]
    assert native_options({**base, "scheduler": "local"}) == ([], [])


def test_slurm_script_quotes_every_argument() -> None:
    script = slurm_script(["python", "-c", 'print("$HOME `id` \\\\")'], name="rm job/1",
                          queue="debug", native=["--time=5"], env={"A": "x y $z"},
                          workdir="/runs/a b")
    assert "#SBATCH -J rm_job_1\n#SBATCH -p debug\n#SBATCH --time=5\n" in script
    assert "export A='x y $z'\n" in script and "cd '/runs/a b'\n" in script
    assert script.endswith("srun python -c 'print(\"$HOME `id` \\\\\")'\n")


def test_parse_sacct_takes_the_signal_from_the_step() -> None:
    text = ("7|FAILED|9:0|0:0|00:00:01|00:00.1||00:10:00|1|localhost\n"
            "7.batch|FAILED|9:0||00:00:01|00:00.1|1200K||1|localhost\n"
            "7.0|CANCELLED|0:9||00:00:01|00:00.1|900K||1|localhost\n"
            "8|TIMEOUT|0:0|0:0|00:01:30|00:00.0||00:01:00|1|localhost\n")
    records = parse_sacct(text)
    assert records["7"].state == "FAILED" and records["7"].step_signal == 9
    assert records["7"].steps == 1 and records["7"].max_rss == "1200K"
    assert records["8"].state == "TIMEOUT" and records["8"].finished


def test_slurm_without_known_configuration_is_refused(tmp_path: Path, runs_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No slurm_conf, no SLURM_CONF, no /etc/slurm/slurm.conf: no SLURM command may run (it
    would ask DNS for the configuration). A fake sbatch on PATH proves none was called."""
    if any(os.path.isfile(p) for p in DEFAULT_SLURM_CONFS):
        pytest.skip("this machine has a default slurm.conf")
    require_soma_workflow()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("sbatch", "sacct", "scancel", "srun"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho {name} >> {calls}\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    before = set(runs_dir.iterdir())
    with pytest.raises(BackendUnavailable, match=r"cluster\.slurm_conf.*DNS"):
        remote_map(tf.square, [(1,)], mode="cluster", scheduler="slurm",
                   shared_dir=str(runs_dir), progress=False)
    with pytest.raises(BackendUnavailable, match=r"cluster\.slurm_conf"):
        submit(tf.square, [(1,)], scheduler="slurm", shared_dir=str(runs_dir))
    assert not calls.exists()
    assert set(runs_dir.iterdir()) == before  # nothing was staged either


def test_unavailable_reason_says_what_is_missing_and_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    config = tmp_path / "config.toml"
    config.write_text('[cluster]\nscheduler = "slurm"\n')
    monkeypatch.setenv("REMOTEMAP_CONFIG", str(config))
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM commands there
    reason = ClusterBackend.unavailable_reason(load_config().section("cluster"))
    assert reason is not None and "sbatch" in reason and "apt install slurm-client" in reason
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "soma_workflow" else real(name, *a))
    reason = ClusterBackend.unavailable_reason(load_config().section("cluster"))
    assert reason is not None and "soma-workflow is not installed" in reason
    assert "pip install soma-workflow" in reason
    config.write_text('[cluster]\nscheduler = "slurm"\nhost = "elsewhere"\n')
    # checked on that host, at run time
    assert ClusterBackend.unavailable_reason(load_config().section("cluster")) is None


def test_a_call_naming_a_submitting_host_is_judged_by_its_own_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """remote_map(f, ..., mode="cluster", host="login") must not be refused because the
    default config (no host) would need soma-workflow and SLURM here; "login" is never
    resolved: the backend is only made, not run."""
    import importlib.util

    config = tmp_path / "config.toml"
    config.write_text('[cluster]\nscheduler = "slurm"\n')
    monkeypatch.setenv("REMOTEMAP_CONFIG", str(config))
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM commands here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "soma_workflow" else real(name, *a))
    cfg = load_config()
    with pytest.raises(BackendUnavailable, match="soma-workflow is not installed"):
        make_backend("cluster", cfg, {})
    backend = make_backend("cluster", cfg, {"host": "login"})
    assert backend.settings["host"] == "login"
    assert ClusterBackend.unavailable_reason(cfg.settings_for("cluster", {"host": "login"})) \
        is None


# -- soma-workflow's local scheduler ---------------------------------------------------------------
def test_local_scheduler_runs_one_grouped_workflow(local: dict[str, Any], runs_dir: Path) -> None:
    n = 40
    got = remote_map(tf.square, [(i,) for i in range(n)], tasks_per_job=10, keep_files=True,
                     **local)
    assert got == [i * i for i in range(n)]
    (entry,) = [e for e in registered() if e["function"] == "square" and not e["detached"]]
    run_dir = Path(entry["root"])
    spec = json.loads((run_dir / "rounds" / "0.json").read_text())
    assert [len(job) for job in spec["jobs"]] == [10, 10, 10, 10]
    assert not (run_dir / "rounds" / "1.json").exists()  # one workflow for the whole run
    status = round_status(run_dir)
    assert status["state"] == "done" and len(status["jobs"]) == 4
    assert all(j["status"] == "done" and j["exit_value"] == 0 for j in status["jobs"])
    db = sqlite3.connect(run_dir / "swf" / "0" / "soma_workflow.db")
    try:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (4,)
        assert db.execute("SELECT count(*) FROM workflows").fetchone() == (1,)
    finally:
        db.close()
    no_engine_left(runs_dir)


def test_soma_workflow_config_files_in_home_are_neither_read_nor_written(
        local: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """soma-workflow's light mode would read ~/.soma-workflow-scheduler.cfg (a bad one makes
    it fail); remotemap builds its configuration in code and writes none of these files."""
    import socket

    home = tmp_path / "home"
    home.mkdir()
    bad = f"[{socket.gethostname()}]\nCPU_NB = abc\nSCHEDULER_INTERVAL = 1\n"
    (home / ".soma-workflow-scheduler.cfg").write_text(bad)
    monkeypatch.setenv("HOME", str(home))
    assert remote_map(abs, [(-1,), (-2,)], **local) == [1, 2]
    assert sorted(p.name for p in home.iterdir()) == [".soma-workflow-scheduler.cfg"]
    assert (home / ".soma-workflow-scheduler.cfg").read_text() == bad


def test_local_failures_carry_the_job_story(local: dict[str, Any]) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(tf.crash_on, [(i,) for i in range(5)], [{"how": "sigkill"}] * 5,
                   tasks_per_job=5, **local)
    exc = info.value
    # Task 3 killed the job: 0-2 came back before, 4 (never reached) ran in a second round.
    assert exc.failed_indices == [3] and exc.results == [0, 1, 2, None, 4]
    failure = exc.failures[0]
    assert failure.kind == "crash" and "SIGKILL" in failure.message
    assert re.search(r"local job \d+ rm-\S+-0-0, status done, exit status finished_regularly, "
                     r"exit value -9", failure.message)


def test_os_exit_with_stderr_tail_and_exception(local: dict[str, Any]) -> None:
    def task(x: int) -> int:
        if x == 1:
            os.write(2, b"about to leave with 5\n")
            os._exit(5)
        if x == 2:
            raise KeyError("nope")
        return x

    with pytest.raises(RemoteException) as info:
        remote_map(task, [(i,) for i in range(4)], tasks_per_job=1, **local)
    exc = info.value
    assert exc.results == [0, None, None, 3]
    crash, error = exc.failures
    assert crash.kind == "crash" and "exited with code 5" in crash.message
    assert "exit value 5" in crash.message and "about to leave with 5" in crash.traceback
    assert error.kind == "exception" and error.exception_type == "KeyError"


def test_timeouts_walltime_and_env_with_the_local_scheduler(local: dict[str, Any]) -> None:
    def task(x: int) -> str:
        if x == 0:
            time.sleep(60)
        return os.environ.get("RM_CLUSTER_TEST", "unset")

    began = time.monotonic()
    with pytest.raises(RemoteException) as info:
        remote_map(task, [(0,), (1,)], timeout=1.0, env={"RM_CLUSTER_TEST": "a b $c"}, **local)
    assert time.monotonic() - began < 30
    assert info.value.results == [None, "a b $c"]
    assert info.value.failures[0].kind == "timeout"
    with pytest.raises(RemoteException) as info:
        remote_map(task, [(0,)], walltime="0:02", **local)
    assert info.value.failures[0].kind == "timeout"
    assert "walltime" in info.value.failures[0].message


def test_retries_go_out_as_a_new_round(local: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"

    def flaky(x: int) -> int:
        if x == 1 and not marker.exists():
            marker.touch()
            raise RuntimeError("first attempt fails")
        return x

    assert remote_map(flaky, [(0,), (1,), (2,)], retries=1, backoff=0.0, **local) == [0, 1, 2]


def test_submitting_process_killed_then_collected(local: dict[str, Any], runs_dir: Path,
                                                  state_home: Path, tmp_path: Path) -> None:
    """SIGKILL the process that called remote_map mid-run: the run finishes without it and
    ``collect`` gives every result; nothing computed is lost or run twice."""
    script = tmp_path / "submitter.py"
    script.write_text(
        "import sys, time\n"
        "from remotemap import remote_map\n"
        "from tests import taskfuncs as tf\n"
        f"remote_map(tf.touch_then_fail, [({str(tmp_path)!r}, i, -1) for i in range(8)],\n"
        f"           mode='cluster', scheduler='local', shared_dir={str(runs_dir)!r},\n"
        "           tasks_per_job=2, progress=False)\n")
    before = {e["run_id"] for e in registered()}
    proc = subprocess.Popen([sys.executable, str(script)], env=env_for_children(state_home))
    try:
        entry = wait_for("the run to start", lambda: next(
            (e for e in registered() if e["run_id"] not in before), None))
        wait_for("a first task", lambda: list(tmp_path.glob("*.ran")))
    finally:
        proc.kill()
        proc.wait()
    assert entry["pid"] == proc.pid and not entry["detached"]
    assert collect(entry["run_id"], timeout=60, remove=True) == list(range(8))
    assert len(list(tmp_path.glob("*.ran"))) == 8
    assert not Path(entry["root"]).exists()
    assert all(e["run_id"] != entry["run_id"] for e in registered())
