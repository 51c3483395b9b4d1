"""Workflows as the status report sees them: runs listed with their steps' states, the index
pruned, a run stopped by Ctrl-C marked interrupted (and resumable), a run whose process died.

The step functions and the fixture these tests share are in test_workflow.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from remotemap.cli import main as cli_main
from remotemap.cli.workflow_status import run_state
from remotemap.execution import this_host
from remotemap.state import state_dir
from remotemap.workflow import Workflow
from remotemap.workflow.store import (
    _prune_index,
    list_workflow_runs,
)
from tests.test_workflow import (
    calls,
    fail_noted,
    note,
    state_home,  # noqa: F401  (autouse: workflow runs are indexed in a private state home)
)

# Step functions defined here travel by value, as test_workflow.py's do (a worker need not
# import the tests).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- the status report --------------------------------------------------------------------------


def test_status_lists_workflow_runs_with_step_states(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("shown-in-status")
    wf.add_step(note, log, "a", step_name="prepare")
    wf.add_step(fail_noted, log, "b", step_name="compute")
    wf.add_step(note, log, "c", step_name="publish")
    wf.run("serial", run_dir=tmp_path / "kept")
    many = Workflow("many-steps")
    for i in range(20):
        many.add_step(note, log, f"m{i}", prerequisites=[])
    many.add_step(fail_noted, log, "last", prerequisites=[])
    many.add_step(note, log, "after")
    many.run("serial")
    runs = list_workflow_runs()
    assert [report["name"] for _, report in runs] == ["many-steps", "shown-in-status"]
    assert runs[1][0] == (tmp_path / "kept").resolve()  # linked from the index

    assert cli_main(["status"]) in (0, 1)  # 1 when another block finds a problem here
    out = capsys.readouterr().out
    block = out[out.index("workflow runs: 2"):]
    assert "'shown-in-status' on serial: failed; 1 done, 1 failed, 1 not run" in block
    assert f"in {(tmp_path / 'kept').resolve()}" in block
    assert "2  compute  failed: ValueError: b was told to fail" in block
    assert "3  publish  not run: step 2 'compute' failed" in block
    # A large run: the failed step, the others counted by state and reason.
    assert "21  fail_noted  failed: ValueError: last was told to fail" in block
    assert "20 steps done" in block
    assert "1 step not run: step 21 'fail_noted' failed" in block


def test_the_index_forgets_old_report_only_runs(tmp_path: Path) -> None:
    wf = Workflow("small")
    wf.add_step(str, 1)
    for _ in range(3):
        wf.run("serial")
    wf.run("serial", run_dir=tmp_path / "kept")
    (state_dir("workflows") / "gone").symlink_to(tmp_path / "removed-by-its-owner")
    _prune_index(keep=1)
    kinds = sorted("link" if p.is_symlink() else "dir" for p in state_dir("workflows").iterdir())
    assert kinds == ["dir", "link"]  # the latest report-only run, and the kept run's link
    assert (tmp_path / "kept" / "workflow.json").is_file()


def interrupt_caller(log: str, flag: str) -> str:
    note(log, "interrupting")
    if os.path.exists(flag):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the caller waits in the main thread
    return "sent"


def test_ctrl_c_leaves_a_resumable_run_marked_interrupted(tmp_path: Path) -> None:
    log, flag = str(tmp_path / "calls"), tmp_path / "interrupt"
    flag.touch()

    def build() -> Workflow:
        wf = Workflow("interrupted")
        wf.add_step(interrupt_caller, log, str(flag))
        wf.add_step(note, log, "after")
        return wf

    with pytest.raises(KeyboardInterrupt):
        build().run("serial", run_dir=tmp_path / "run")
    (_, report), = list_workflow_runs()
    assert report["state"] == "interrupted"
    assert report["steps"][1]["state"] == "not run"
    assert report["steps"][1]["reason"] == "the run was interrupted before it could run"
    assert "after" not in calls(tmp_path / "calls")
    flag.unlink()
    assert build().run("serial", run_dir=tmp_path / "run").ok
    assert calls(tmp_path / "calls").count("after") == 1


def test_status_tells_a_run_whose_process_died() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    report = {"state": "running", "host": this_host(), "pid": gone.pid}
    assert run_state(report).startswith("stopped half-way (its process is gone")
    assert run_state({**report, "pid": os.getpid()}) == "running"
    assert run_state({**report, "state": "done"}) == "done"
