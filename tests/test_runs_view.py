"""``remotemap runs`` and :func:`remotemap.load_run`: one view of every kind of run (run_dir,
workflow, cluster), driven as a user would, with the state home private to the module."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Generator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from remotemap import (
    RemoteException,
    RunNotFinished,
    TaskFailure,
    Workflow,
    load_run,
    remote_imap,
    remote_map,
)
from remotemap.backends.cluster import collect, submit
from remotemap.cli import main as cli_main
from remotemap.runs import RunStore
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import wait_for
from tests.slurm_fixtures import require_soma_workflow

state_home = cluster_support.state_home  # module-scoped: $XDG_STATE_HOME in a temp dir
runs_dir = cluster_support.runs_dir


def _map_run(run_dir: Path, bad: tuple[int, ...] = (2,)) -> str:
    """A run_dir run of fail_on over 1, 2, 3 (task 1 fails with the default ``bad``)."""
    with contextlib.suppress(RemoteException):  # the run is what the test reads
        remote_map(tf.fail_on, [(1,), (2,), (3,)], [{"bad": bad}] * 3, mode="serial",
                   run_dir=run_dir, progress=False)
    return str(RunStore.existing(run_dir).meta()["id"])


def _workflow_run(run_dir: Path | None) -> str:
    """A workflow whose step 2 fails, so step 3 (after it) does not run."""
    wf = Workflow("analysis")
    wf.add_step(tf.square, 3)
    failing = wf.add_step(tf.fail_on, 2)
    wf.add_step(tf.square, 4, prerequisites=[failing])
    report = wf.run("serial", run_dir=run_dir)
    assert [s.state for s in report] == ["done", "failed", "not run"]
    index = Path(os.environ["XDG_STATE_HOME"]) / "remotemap" / "workflows"
    newest = max(index.iterdir(), key=lambda p: (p / "workflow.json").stat().st_mtime_ns)
    return newest.name


def _cluster_run(shared: Path) -> str:
    """A detached cluster run on soma-workflow's local scheduler; task 1 fails."""
    require_soma_workflow()
    run_id = submit(tf.fail_on, [(1,), (2,)], scheduler="local", shared_dir=str(shared))
    with pytest.raises(RemoteException):
        collect(run_id, timeout=120)  # waits for it; it stays registered
    return run_id


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory, runs_dir: Path) -> dict[str, Any]:
    """One run of each kind, each with a failed task, made once for the module."""
    base = tmp_path_factory.mktemp("kept")
    return {"root": base, "map": _map_run(base / "map"), "workflow": _workflow_run(base / "wf"),
            "cluster": _cluster_run(runs_dir)}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remotemap", *args], capture_output=True,
                          text=True, timeout=120)


def _table(out: str) -> dict[str, list[str]]:
    """`remotemap runs` by id: kind, mode, state, ok, failed, pending, age, name."""
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "KIND", "MODE", "STATE", "OK", "FAILED", "PENDING",
                                "AGE", "NAME"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if line[:1] != " "}


def test_runs_lists_every_kind_with_its_columns(kept: dict[str, Any]) -> None:
    listed = _cli("runs")
    assert listed.returncode == 0, listed.stderr
    table = _table(listed.stdout)
    assert table[kept["map"]][:6] == ["run_dir", "serial", "failed", "2", "1", "0"]
    assert table[kept["map"]][7] == "tests.taskfuncs.fail_on"
    assert table[kept["workflow"]][:6] == ["workflow", "serial", "failed", "1", "1", "1"]
    assert table[kept["workflow"]][7] == "analysis"
    assert table[kept["cluster"]][:6] == ["cluster", "cluster", "failed", "1", "1", "0"]
    for row in (table[kept[k]] for k in ("map", "workflow", "cluster")):
        assert re.fullmatch(r"\d+[smhd]", row[6]), row


def test_runs_show_of_each_kind(kept: dict[str, Any], runs_dir: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["runs", "show", kept["map"]]) == 0
    out = capsys.readouterr().out
    assert f"where: {(kept['root'] / 'map').resolve()}" in out
    assert "3 tasks: 2 ok, 1 failed, 0 pending" in out
    assert re.search(r"\[exception\] task 1 on \S+: ValueError: bad value 2", out)
    assert 'raise ValueError(f"bad value {x}")' in out  # the traceback's tail
    assert f"`remotemap runs retry {kept['map']}`" in out

    assert cli_main(["runs", "show", kept["workflow"]]) == 0
    out = capsys.readouterr().out
    assert f"where: {(kept['root'] / 'wf').resolve()}" in out
    assert "step   2  fail_on  failed: ValueError: bad value 2" in out
    assert "step   3  square  not run: step 2 'fail_on' failed" in out
    assert "pending tasks: 3" in out

    assert cli_main(["runs", "show", kept["cluster"]]) == 0
    out = capsys.readouterr().out
    assert f"where: {runs_dir / kept['cluster']}" in out
    assert "scheduler local via localhost; detached" in out
    assert re.search(r"\[exception\] task 1 on \S+: ValueError: bad value 2", out)

    assert cli_main(["runs", "show", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err


@pytest.mark.skipif("output" not in {f.name for f in fields(TaskFailure)},
                    reason="TaskFailure.output (what a task printed) is not in this version")
def test_runs_show_prints_the_end_of_what_a_failed_task_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def loud(x: int) -> int:
        for line in range(30):
            print(f"line {line} of task {x}")
        raise ValueError("after printing")

    with pytest.raises(RemoteException):
        remote_map(loud, [(7,)], mode="local_with_dumps", run_dir=tmp_path / "loud",
                   progress=False)
    capsys.readouterr()  # the lines the run itself streamed (stream_output) are not the view
    assert cli_main(["runs", "show", str(tmp_path / "loud")]) == 0
    out = capsys.readouterr().out
    assert "output (last 10 lines):" in out and "line 29 of task 7" in out
    assert "line 19 of task 7" not in out


def test_runs_results_writes_a_file_that_loads_back(kept: dict[str, Any], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ok = _map_run(tmp_path / "ok", bad=())
    assert cli_main(["runs", "results", ok, "-o", str(tmp_path / "ok.pkl")]) == 0
    assert pickle.loads((tmp_path / "ok.pkl").read_bytes()) == [1, 2, 3]
    assert cli_main(["runs", "results", ok]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == ["0\t1", "1\t2", "2\t3"]

    # A failed task: None in the file, <failed> on the screen, and the exit status says so.
    assert cli_main(["runs", "results", kept["map"], "-o", str(tmp_path / "m.pkl")]) == 1
    assert pickle.loads((tmp_path / "m.pkl").read_bytes()) == [1, None, 3]
    assert "no result for 1 failed task (1)" in capsys.readouterr().err
    assert cli_main(["runs", "results", kept["cluster"]]) == 1
    assert capsys.readouterr().out.splitlines() == ["0\t1", "1\t<failed>"]
    # A workflow's values are its steps', by step id.
    assert cli_main(["runs", "results", kept["workflow"]]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["1\t9", "2\t<failed>", "3\t<pending>"]
    assert "1 failed task (2) and 1 pending task (3)" in captured.err


def test_load_run_for_each_kind(kept: dict[str, Any], runs_dir: Path) -> None:
    run = load_run(kept["map"])
    assert (run.kind, run.summary.mode, run.summary.state) == ("run_dir", "serial", "failed")
    assert [f.index for f in run.failures] == [1] and run.failures[0].message == "bad value 2"
    with pytest.raises(RemoteException) as info:
        run.results()
    assert info.value.results == [1, None, 3] and info.value.failed_indices == [1]
    assert load_run(kept["root"] / "map").id == kept["map"]  # by directory too

    workflow = load_run(kept["workflow"])
    assert (workflow.kind, workflow.summary.name, workflow.pending) == ("workflow", "analysis",
                                                                        [3])
    assert [f.index for f in workflow.failures] == [2]
    assert workflow.failures[0].exception_type == "ValueError"
    with pytest.raises(RemoteException) as info:
        workflow.results()
    assert info.value.results == [9, None, None]

    cluster = load_run(kept["cluster"][:-2])  # a unique prefix is enough
    assert (cluster.kind, cluster.id) == ("cluster", kept["cluster"])
    assert cluster.summary.location == str(runs_dir / kept["cluster"])
    assert [f.index for f in cluster.failures] == [1]
    with pytest.raises(RemoteException) as info:
        cluster.results()
    assert info.value.results == [1, None]


def test_a_run_stopped_half_way_is_not_finished(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    results = remote_imap(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=tmp_path / "r",
                          progress=False)
    assert isinstance(results, Generator) and next(results) == (0, 1)
    run_id = str(RunStore.existing(tmp_path / "r").meta()["id"])
    assert load_run(run_id).summary.state == "running"  # its lock is held, here
    assert cli_main(["runs", "clean", "--force", run_id]) == 1  # never while it runs
    assert f"kept {run_id} (run_dir): it is running now" in capsys.readouterr().out
    assert (tmp_path / "r" / "run.json").is_file()
    results.close()  # the call ends with two tasks never run
    run = load_run(run_id)
    assert (run.summary.state, run.pending) == ("stopped", [1, 2])
    with pytest.raises(RunNotFinished, match=rf"run {run_id} is not finished: 2 of 3 tasks"
                                             r" have no result yet \(tasks 1-2\)") as info:
        run.results()
    assert info.value.results == [1, None, None] and info.value.pending == [1, 2]


def test_retry_of_a_run_dir_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counters = tmp_path / "counters"
    counters.mkdir()
    with pytest.raises(RemoteException):
        remote_map(tf.fail_until, [(str(counters), i, 1 if i == 1 else 0) for i in range(3)],
                   mode="serial", run_dir=tmp_path / "r", progress=False)
    run_id = str(RunStore.existing(tmp_path / "r").meta()["id"])
    assert cli_main(["runs", "retry", run_id]) == 0
    assert "all 3 tasks ok" in capsys.readouterr().out
    assert load_run(run_id).results() == [1, 2, 1]  # task 1 on its second attempt


def test_retry_and_collect_of_another_kind_say_what_reads_it(
        kept: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["runs", "retry", kept["workflow"]]) == 1
    assert f"workflow run {kept['workflow']} cannot be retried" in capsys.readouterr().err
    assert cli_main(["retry", kept["cluster"]]) == 1
    assert f"`remotemap collect {kept['cluster']}`" in capsys.readouterr().err
    assert cli_main(["collect", kept["map"]]) == 1
    assert (f"{kept['map']!r} is a run_dir run, not a cluster run: `remotemap runs results "
            f"{kept['map']}`") in capsys.readouterr().err


def test_runs_clean_keeps_failed_runs_unless_forced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # these runs only
    failed, done = _map_run(tmp_path / "failed"), _map_run(tmp_path / "done", bad=())
    workflow = _workflow_run(tmp_path / "wf")
    report_only = _workflow_run(None)
    cluster = _cluster_run(tmp_path / "shared")
    assert cli_main(["runs", "clean", "--older-than", "0"]) == 0
    out = capsys.readouterr().out
    assert f"removed {done} (run_dir)" in out and "1 run(s) removed" in out
    for run_id, kind in ((failed, "run_dir"), (workflow, "workflow"), (cluster, "cluster")):
        assert f"kept {run_id} ({kind}): it is failed" in out and "--force" in out
    assert (tmp_path / "failed").is_dir() and (tmp_path / "wf").is_dir()
    assert not (tmp_path / "done").exists()
    # A workflow named, and kept: the exit status says so, naming it.
    assert cli_main(["clean", workflow]) == 1
    assert f"kept {workflow} (workflow): it is failed" in capsys.readouterr().out
    assert cli_main(["clean", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err

    assert cli_main(["runs", "clean", "--force", failed, workflow, report_only, cluster]) == 0
    assert "4 run(s) removed" in capsys.readouterr().out
    assert not (tmp_path / "failed").exists() and not (tmp_path / "wf").exists()
    assert not (tmp_path / "shared" / cluster).exists()
    assert cli_main(["runs"]) == 0
    assert capsys.readouterr().out.startswith("no stored runs in ")


def test_a_cluster_run_going_on_reads_as_running_and_is_never_removed(
        runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_soma_workflow()
    stem = str(tmp_path / "t")
    run_id = submit(tf.pid_and_sleep, [(stem, 0, 0.0), (stem, 1, 60.0)], scheduler="local",
                    shared_dir=str(runs_dir))
    try:
        wait_for("task 1 to start", lambda: Path(f"{stem}.1").exists(), timeout=60)
        wait_for("task 0's result", lambda: load_run(run_id).summary.ok == 1, timeout=60)
        run = load_run(run_id)
        assert (run.summary.state, run.pending) == ("running", [1])
        with pytest.raises(RunNotFinished, match=r"1 of 2 tasks have no result yet \(tasks 1\)"):
            run.results()
        assert cli_main(["runs", "clean", "--force", run_id]) == 1
        assert f"`remotemap cancel {run_id}` stops it" in capsys.readouterr().out
        assert (runs_dir / run_id).is_dir()
    finally:
        assert cli_main(["cancel", run_id]) == 0
    assert load_run(run_id).summary.state == "cancelled"
