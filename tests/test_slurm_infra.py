"""The private single-node SLURM works, and soma-workflow (light mode) can drive it in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.slurm import JobRecord, SingleNodeSlurm
from tests.slurm_fixtures import require_soma_workflow

pytestmark = pytest.mark.slurm


def test_cluster_reports_idle_node_and_start_time(slurm_cluster: SingleNodeSlurm) -> None:
    info = slurm_cluster.run(["sinfo", "-h", "-o", "%P %a %l %D"]).stdout.split()
    assert info[:2] == ["debug*", "up"]
    assert 0 < slurm_cluster.start_seconds < 60
    assert slurm_cluster.conf_path.is_file()
    assert str(slurm_cluster.state_dir) in slurm_cluster.client_env()["SLURM_CONF"]


def test_job_writes_file_and_completes(slurm_cluster: SingleNodeSlurm, tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    job_id = slurm_cluster.sbatch("--wrap", f"echo hello > {target}")
    record = slurm_cluster.wait_job(job_id, timeout=60)
    assert record == JobRecord(job_id, "COMPLETED", 0, 0)
    assert target.read_text() == "hello\n"


def test_failing_job_reports_failed_with_exit_code(slurm_cluster: SingleNodeSlurm) -> None:
    job_id = slurm_cluster.sbatch("--wrap", "exit 7")
    assert slurm_cluster.wait_job(job_id, timeout=60) == JobRecord(job_id, "FAILED", 7, 0)


def test_job_killed_by_signal_reports_the_signal(slurm_cluster: SingleNodeSlurm) -> None:
    job_id = slurm_cluster.sbatch("--wrap", "kill -9 $$")
    assert slurm_cluster.wait_job(job_id, timeout=60) == JobRecord(job_id, "FAILED", 0, 9)


def test_scancel_reports_cancelled(slurm_cluster: SingleNodeSlurm) -> None:
    job_id = slurm_cluster.sbatch("--wrap", "sleep 600")
    _wait_state(slurm_cluster, job_id, "RUNNING")
    slurm_cluster.run(["scancel", job_id])
    assert slurm_cluster.wait_job(job_id, timeout=60).state == "CANCELLED"


def test_soma_workflow_light_mode_drives_slurm(
    slurm_env: SingleNodeSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_soma_workflow()
    from soma_workflow import constants
    from soma_workflow import engine as swf_engine
    from soma_workflow.client import Job, Workflow
    from soma_workflow.schedulers import slurm_scheduler

    from tests.infra import swf_slurm_probe as probe

    # light_controller sets both globals; monkeypatch puts the originals back afterwards.
    monkeypatch.setattr(swf_engine, "refreshment_interval", 0.1)
    monkeypatch.setattr(slurm_scheduler, "__main_scheduler__", None, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    ok = Job(["/bin/sh", "-c", f"echo hello > {out}/ok.txt"], name="ok")
    exit3 = Job(["/bin/sh", "-c", "echo about to fail >&2; exit 3"], name="exit3")
    # Each argument lands in double quotes in soma-workflow's bash script: no "$" in commands.
    sigkill = Job(["/usr/bin/python3", "-c", "import os; os.kill(os.getpid(), 9)"], name="sigkill")
    cancelled = Job(["sleep", "600"], name="cancelled")
    after_ok = Job(["/bin/sh", "-c", f"cat {out}/ok.txt"], name="after_ok")
    after_fail = Job(["true"], name="after_fail")
    workflow = Workflow(
        [ok, exit3, sigkill, cancelled, after_ok, after_fail],
        dependencies=[(ok, after_ok), (exit3, after_fail)],
    )
    wfc = probe.light_controller(tmp_path / "swf", "slurm", tick=0.1)
    try:
        assert type(wfc._engine_proxy.engine_loop._scheduler) is probe.SacctSlurmScheduler
        began = time.monotonic()
        wf_id = wfc.submit_workflow(workflow, name="infra-test")
        slurm_id = _wait_swf_running(wfc, wf_id, "cancelled")
        slurm_env.run(["scancel", str(slurm_id)])
        wfc.wait_workflow(wf_id, timeout=120)
        elapsed = time.monotonic() - began
        assert wfc.workflow_status(wf_id) == constants.WORKFLOW_DONE
        got = {name: _outcome(wfc, job_id) for name, job_id in _job_ids(wfc, wf_id).items()}
        err = tmp_path / "exit3.err"
        wfc.retrieve_job_stdouterr(_job_ids(wfc, wf_id)["exit3"], str(tmp_path / "o"), str(err))
    finally:
        probe.close_controller(wfc)
    assert got == {
        "ok": ("done", "finished_regularly", 0, None, "COMPLETED"),
        "exit3": ("done", "finished_regularly", 3, None, "FAILED"),
        "sigkill": ("done", "finished_signal", -9, 9, "FAILED"),
        "cancelled": ("failed", "killed_by_user", None, None, "CANCELLED"),
        "after_ok": ("done", "finished_regularly", 0, None, "COMPLETED"),
        "after_fail": ("failed", "aborted_before_running", None, None, None),
    }
    assert "about to fail" in err.read_text()
    assert (out / "ok.txt").read_text() == "hello\n"
    assert elapsed < 60


# ------------------------------------------------------------------------------ helpers
def _wait_state(cluster: SingleNodeSlurm, job_id: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = cluster.job(job_id)
        if record is not None and record.state == state:
            return
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} never reached {state}: {cluster.job(job_id)}")


def _job_ids(wfc: Any, wf_id: int) -> dict[str, int]:
    workflow = wfc.workflow(wf_id)
    return {job.name: workflow.job_mapping[job].job_id for job in workflow.jobs}


def _wait_swf_running(wfc: Any, wf_id: int, name: str, timeout: float = 60) -> str:
    job_id = _job_ids(wfc, wf_id)[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in wfc.workflow_elements_status(wf_id, with_drms_id=True)[0]:
            if row[0] == job_id and row[1] == "running":
                return str(row[5])
        time.sleep(0.1)
    raise TimeoutError(f"soma-workflow job {name} never ran")


def _outcome(wfc: Any, job_id: int) -> tuple[Any, ...]:
    status = wfc.job_status(job_id)
    exit_status, value, sig, usage = wfc.job_termination_status(job_id)
    state = None
    for item in (usage or "").split():
        if item.startswith("slurm_state="):
            state = item.partition("=")[2]
    # The light-mode database hands the signal back as text ("9").
    return (status, exit_status, value, None if sig is None else int(sig), state)


@pytest.fixture(autouse=True, scope="module")
def _no_stray_jobs(slurm_cluster: SingleNodeSlurm) -> Iterator[None]:
    """Cancel the jobs this module's tests left queued or running, and only those: a job of
    another module goes on (the walltime runs of test_cluster_slurm and test_cluster_pilot are
    collected at the session's end; a partition-wide scancel here cancelled one)."""
    before = _queued(slurm_cluster)
    yield
    stray = sorted(_queued(slurm_cluster) - before)
    if stray:
        slurm_cluster.run(["scancel", *stray], check=False)


def _queued(cluster: SingleNodeSlurm) -> set[str]:
    """The ids of the jobs pending or running, but remotemap's (named ``rm-RUN-...``): a run
    another module collects later may submit a job while this module runs."""
    rows = cluster.run(["squeue", "-h", "-t", "PD,R", "-o", "%i %j"]).stdout.splitlines()
    return {job for job, _, name in (row.partition(" ") for row in rows)
            if not name.startswith("rm-")}
