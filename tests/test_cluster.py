"""Mode ``cluster``: real soma-workflow, real jobs (its local scheduler, and a real single-node
SLURM started by the tests), and a real loopback sshd as the submitting host.

The one walltime test waits for SLURM to kill a job (limits are whole minutes, enforced about
every 30 s): it is submitted, detached, by the first test of the file and collected by the
last, so it runs while the others do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, remote_map
from remotemap.api import make_backend
from remotemap.backends import cluster_engine
from remotemap.backends.cluster import (
    ClusterBackend,
    ClusterError,
    cancel,
    collect,
    list_runs,
    native_options,
    submit,
    walltime_seconds,
)
from remotemap.backends.cluster_files import registered, registry_dir
from remotemap.backends.cluster_swf import parse_sacct, slurm_script
from remotemap.cli import main as cli_main
from remotemap.config import load_config
from remotemap.errors import BackendUnavailable
from tests import taskfuncs as tf
from tests.infra.slurm import SingleNodeSlurm
from tests.slurm_fixtures import require_soma_workflow

REPO = Path(__file__).resolve().parent.parent


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run registry ($XDG_STATE_HOME) in a temp dir for the whole module."""
    path = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-runs")


@pytest.fixture
def swf() -> None:
    require_soma_workflow()


@pytest.fixture
def local(swf: None, runs_dir: Path) -> dict[str, Any]:
    return {"mode": "cluster", "scheduler": "local", "shared_dir": str(runs_dir),
            "progress": False}


def slurm_options(cluster: SingleNodeSlurm, runs_dir: Path) -> dict[str, Any]:
    return {"scheduler": "slurm", "slurm_conf": str(cluster.conf_path),
            "shared_dir": str(runs_dir), "poll_interval": 0.5}


@pytest.fixture
def slurm(swf: None, slurm_cluster: SingleNodeSlurm, runs_dir: Path) -> dict[str, Any]:
    return {"mode": "cluster", "progress": False, **slurm_options(slurm_cluster, runs_dir)}


def env_for_children(state_home: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(state_home), "PYTHONPATH": str(REPO)}


def round_status(run_dir: Path, rnd: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "rounds" / f"{rnd}.status.json").read_text())
    return data


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def no_engine_left(runs_dir: Path) -> None:
    """No cluster engine of this test module still runs (they exit with their rounds)."""
    out = subprocess.run(["pgrep", "-f", f"cluster_engine start {runs_dir}"],
                         capture_output=True, text=True, check=False).stdout.split()
    assert out == [], f"engines still running: {out}"


# -- the one slow test, first half: submitted now, collected at the end ------------------------
@pytest.fixture(scope="module")
def walltime_run(slurm_cluster: SingleNodeSlurm,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_soma_workflow()
    # One job of two tasks and a 1-minute walltime: task 0 outlives it, task 1 never starts
    # in that job and goes to a second round, where it runs.
    runs = tmp_path_factory.mktemp("walltime-runs")
    run_id = submit(tf.pid_and_sleep, [(str(runs / "wall"), 0, 300.0),
                                       (str(runs / "wall"), 1, 0.0)],
                    walltime="1", tasks_per_job=2, **slurm_options(slurm_cluster, runs))
    yield run_id
    if any(e["run_id"] == run_id for e in registered()):
        cancel(run_id)


@pytest.mark.slurm
@pytest.mark.slow
def test_walltime_run_is_submitted_detached(walltime_run: str) -> None:
    entry = next(e for e in registered() if e["run_id"] == walltime_run)
    assert entry["detached"] is True and entry["settings"]["walltime"] == "1"
    spec = json.loads((Path(entry["root"]) / "rounds" / "0.json").read_text())
    assert spec["native"] == ["--time=1"] and spec["jobs"] == [[0, 1]]


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
    if any(os.path.isfile(p) for p in cluster_engine.DEFAULT_SLURM_CONFS):
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


# -- SLURM -----------------------------------------------------------------------------------------
@pytest.mark.slurm
def test_slurm_map_and_failures(slurm: dict[str, Any], runs_dir: Path) -> None:
    def task(x: int) -> str:
        if x == 1:
            os.write(2, b"leaving with 7\n")
            os._exit(7)
        if x == 2:
            tf.crash_on(3, "segfault")
        if x == 3:
            raise ValueError("three")
        return os.environ["SLURM_JOB_ID"]

    with pytest.raises(RemoteException) as info:
        remote_map(task, [(i,) for i in range(6)], tasks_per_job=1, **slurm)
    exc = info.value
    job_ids = [exc.results[i] for i in (0, 4, 5)]
    assert all(j.isdigit() for j in job_ids) and len(set(job_ids)) == 3  # one job per task
    exit7, segv, error = exc.failures
    assert exit7.kind == "crash" and "exited with code 7" in exit7.message
    assert re.search(r"slurm job \d+ .*exit value 7.*slurm state FAILED, node localhost",
                     exit7.message)
    assert "leaving with 7" in exit7.traceback and "srun:" not in exit7.traceback
    assert segv.kind == "crash" and "SIGSEGV" in segv.message and "signal 11" in segv.message
    assert error.kind == "exception" and error.message == "three"
    no_engine_left(runs_dir)


@pytest.mark.slurm
def test_scancel_is_reported_as_cancelled(slurm: dict[str, Any], slurm_cluster: SingleNodeSlurm,
                                          tmp_path: Path) -> None:
    marker = tmp_path / "job-id"
    cancelled: list[str] = []

    def task(path: str) -> None:
        Path(path + ".tmp").write_text(os.environ["SLURM_JOB_ID"])
        os.replace(path + ".tmp", path)
        time.sleep(120)

    def scancel_when_running() -> None:
        job_id = wait_for("the task to start", lambda: marker.exists() and marker.read_text())
        slurm_cluster.run(["scancel", job_id])
        cancelled.append(job_id)

    thread = threading.Thread(target=scancel_when_running)
    thread.start()
    try:
        with pytest.raises(RemoteException) as info:
            remote_map(task, [(str(marker),)], **slurm)
    finally:
        thread.join()
    failure = info.value.failures[0]
    assert failure.kind == "cancelled", failure.message
    assert f"slurm job {cancelled[0]} " in failure.message and "CANCELLED" in failure.message


@pytest.mark.slurm
def test_unknown_partition_names_the_option(slurm: dict[str, Any]) -> None:
    with pytest.raises(ClusterError) as info:
        remote_map(tf.square, [(1,)], queue="nope", **slurm)
    assert "cluster.queue = 'nope'" in str(info.value)
    assert "Invalid partition name specified" in str(info.value)


@pytest.mark.slurm
def test_detached_run_status_and_collect_from_other_processes(
        slurm: dict[str, Any], state_home: Path, tmp_path: Path) -> None:
    env = env_for_children(state_home)
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    code = ("from remotemap.backends.cluster import submit\n"
            "from tests import taskfuncs as tf\n"
            f"print(submit(tf.foo, [(i,) for i in range(12)], tasks_per_job=3, **{options!r}))\n")
    began = time.monotonic()
    sub = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    run_id = sub.stdout.strip()
    assert time.monotonic() - began < 10  # returns at once, the jobs run without it
    listed = [r for r in list_runs() if r["run_id"] == run_id]
    assert listed and listed[0]["detached"] and listed[0]["n_tasks"] == 12
    status = subprocess.run([sys.executable, "-m", "remotemap", "status"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert re.search(rf"{run_id}  slurm via localhost.*\n.*jobs: ", status.stdout)
    out = subprocess.run([sys.executable, "-m", "remotemap", "collect", run_id, "--remove"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{i}\t{i + 2}" for i in range(12)]
    assert all(e["run_id"] != run_id for e in registered())


@pytest.mark.slurm
def test_dead_engine_is_replaced_and_adopts_the_jobs(slurm: dict[str, Any],
                                                     tmp_path: Path) -> None:
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, i, 3.0) for i in range(4)], tasks_per_job=1,
                    **options)
    entry = next(e for e in registered() if e["run_id"] == run_id)
    run_dir = Path(entry["root"])

    def submitted() -> dict[str, Any] | None:
        if not (run_dir / "rounds" / "0.status.json").exists():
            return None
        status = round_status(run_dir)
        jobs = status.get("jobs") or []
        return status if jobs and all(j.get("drms") for j in jobs) else None

    status = wait_for("jobs submitted", submitted)
    os.kill(status["pid"], signal.SIGKILL)  # the engine dies; its SLURM jobs do not
    assert collect(run_id, timeout=120, remove=False) == [0, 1, 2, 3]
    final = wait_for("the new engine to finish", lambda: (
        round_status(run_dir) if round_status(run_dir).get("exited") else None))
    assert final["adopted"] == 1 and final["state"] == "done"
    assert final["pid"] != status["pid"]
    # Adopted, not resubmitted: the same SLURM job ids, each task ran once.
    assert [j["drms"] for j in final["jobs"]] == [j["drms"] for j in status["jobs"]]
    assert collect(run_id, remove=True) == [0, 1, 2, 3]


@pytest.mark.slurm
def test_cancel_a_detached_run(slurm: dict[str, Any], slurm_cluster: SingleNodeSlurm,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, i, 120.0) for i in range(3)], tasks_per_job=1,
                    **options)
    wait_for("a task to start", lambda: list(tmp_path.glob("t.[0-9]")))
    assert cli_main(["cancel", run_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    # Nothing of it pending or running any more (killed jobs may linger as COMPLETING).
    queue = slurm_cluster.run(["squeue", "-h", "-t", "PD,R", "-o", "%j"]).stdout
    assert run_id not in queue
    with pytest.raises(RemoteException) as info:
        collect(run_id, timeout=30, remove=True)
    assert sorted(f.kind for f in info.value.failures) == ["cancelled"] * 3


# -- a remote submitting host over SSH ------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.ssh
def test_remote_submitting_host_over_ssh(swf: None, slurm_cluster: SingleNodeSlurm,
                                         sshd_host: Any, rmtest_can_submit: Path) -> None:
    def task(x: int) -> tuple[int, str, str]:
        import getpass

        if x == 3:
            raise ArithmeticError("three")
        return x * 2, getpass.getuser(), os.environ["SLURM_JOB_ID"]

    options = {"mode": "cluster", "scheduler": "slurm", "host": sshd_host.alias,
               "ssh_config": str(sshd_host.ssh_config), "python": str(rmtest_can_submit),
               "slurm_conf": str(slurm_cluster.conf_path), "poll_interval": 0.5,
               "shared_dir": ".cache/remotemap/cluster-test", "tasks_per_job": 2,
               "progress": False}
    with pytest.raises(RemoteException) as info:
        remote_map(task, [(i,) for i in range(6)], **options)
    exc = info.value
    assert exc.failed_indices == [3] and exc.failures[0].message == "three"
    values = [r for r in exc.results if r is not None]
    assert [v[0] for v in values] == [0, 2, 4, 8, 10]
    assert {v[1] for v in values} == {"rmtest"}  # ran as the SSH user, through its SLURM jobs
    assert len({v[2] for v in values}) == 3  # 6 tasks, 2 a job
    home_runs = Path(sshd_host.user.home) / ".cache/remotemap/cluster-test"
    assert list(home_runs.iterdir()) == []  # the run directory was removed over SSH


# -- the one slow test, second half ----------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_walltime_exceeded_is_a_timeout(walltime_run: str) -> None:
    with pytest.raises(RemoteException) as info:
        collect(walltime_run, timeout=240, remove=True)
    exc = info.value
    assert exc.failed_indices == [0] and exc.results == [None, 1]
    failure = exc.failures[0]
    assert failure.kind == "timeout" and "walltime" in failure.message
    assert "slurm state TIMEOUT" in failure.message
    assert not registry_dir().joinpath(f"{walltime_run}.json").exists()
