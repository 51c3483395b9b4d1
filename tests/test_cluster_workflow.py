"""Workflows on ``cluster``: the graph goes to soma-workflow as jobs with dependencies.

The graph tests every mode shares are in test_workflow.py (they run on SLURM there). These
check what only the cluster does: one round of dependent jobs for a whole graph, a job never
started after a failed prerequisite, later rounds for client and always-run steps and for
retries, step timeouts, and a submitting host reached over SSH. Steps log each call to a file,
so the tests count what ran, whoever ran it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import Result, Workflow
from remotemap.integrity import read_key_file
from remotemap.protocol import chunk_name, decode_chunk, unseal_file
from remotemap.tasks import Chunk
from tests.infra.slurm import SingleNodeSlurm
from tests.slurm_fixtures import require_soma_workflow
from tests.test_workflow import add_noted, calls, fail_noted, fail_once_noted, note

# The ssh test user has remotemap but not the tests: their step functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def read_chunk(run: Path, file: int) -> Chunk:
    """A chunk file of the run, checked with the run's key (its key file is named in run.json)."""
    key = read_key_file(json.loads((run / "run.json").read_text())["key_file"])
    path = run / chunk_name(file)
    return decode_chunk(unseal_file(key, chunk_name(file), path.read_bytes(), str(path)))[1]


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run registries ($XDG_STATE_HOME) in the test's own directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def local(tmp_path: Path) -> dict[str, Any]:
    require_soma_workflow()
    return {"scheduler": "local", "shared_dir": str(tmp_path / "runs"), "keep_files": True}


@pytest.fixture
def slurm(slurm_cluster: SingleNodeSlurm, tmp_path: Path) -> dict[str, Any]:
    require_soma_workflow()
    return {"scheduler": "slurm", "slurm_conf": str(slurm_cluster.conf_path),
            "shared_dir": str(tmp_path / "runs"), "poll_interval": 0.5, "keep_files": True}


# -- step functions -------------------------------------------------------------------------------
def where(value: Any) -> tuple[int, Any]:
    return os.getpid(), value


def the_run(options: dict[str, Any]) -> Path:
    """The one cluster run directory the workflow left (``keep_files``)."""
    runs = list(Path(options["shared_dir"]).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def rounds(run: Path) -> list[dict[str, Any]]:
    specs = sorted((run / "rounds").glob("[0-9]*.json"), key=lambda p: int(p.stem.split(".")[0]))
    return [json.loads(p.read_text()) for p in specs if p.stem.isdigit()]


def job_rows(run: Path, number: int = 0) -> list[dict[str, Any]]:
    status = json.loads((run / "rounds" / f"{number}.status.json").read_text())
    rows: list[dict[str, Any]] = status["jobs"]
    return rows


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.slurm
def test_a_whole_graph_is_one_round_of_dependent_slurm_jobs(slurm: dict[str, Any],
                                                            tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("diamond")
    top = wf.add_step(add_noted, log, "top", 1, 1)
    left = wf.add_step(add_noted, log, "left", Result(top), 10, prerequisites=[top])
    right = wf.add_step(add_noted, log, "right", Result(top), 100, prerequisites=[top])
    bottom = wf.add_step(add_noted, log, "bottom", Result(left), Result(right))
    report = wf.run("cluster", **slurm)
    assert report.ok, report
    assert report.value(bottom) == 12 + 102
    order = calls(tmp_path / "calls")
    assert order[0] == "top" and order[-1] == "bottom" and sorted(order[1:3]) == ["left", "right"]

    run = the_run(slurm)
    [spec] = rounds(run)  # one soma-workflow workflow: the batch side ordered the jobs
    assert spec["jobs"] == [[0], [1], [2], [3]] and spec["fail_exit"] is True
    assert sorted(map(tuple, spec["dependencies"])) == [(0, 1), (0, 2), (1, 3), (2, 3)]
    assert all(row["drms"] for row in job_rows(run))  # four real SLURM jobs
    # The last step's job read its prerequisites' values from their outcome files: what it
    # was sent holds the placeholders and the paths, not the values.
    chunk = read_chunk(run, 3)
    func, args, _, sources, _ = chunk.largs[0]
    assert func is add_noted or func.__name__ == "add_noted"
    assert args[2:] == (Result(left), Result(right))
    assert sources == {left: str(run / "outcomes" / "000001.pkl"),
                       right: str(run / "outcomes" / "000002.pkl")}


@pytest.mark.slurm
def test_the_job_after_a_failed_step_is_never_submitted(slurm: dict[str, Any],
                                                        tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("failing")
    first = wf.add_step(fail_noted, log, "first")
    after = wf.add_step(note, log, "after")
    alone = wf.add_step(note, log, "alone", 7, prerequisites=[])
    report = wf.run("cluster", **slurm)
    assert [s.state for s in report] == ["failed", "not run", "done"]
    assert report[first].reason.startswith("ValueError: first was told to fail")
    assert report[after].reason == "step 1 'fail_noted' failed"
    assert report.value(alone) == 7
    assert sorted(calls(tmp_path / "calls")) == ["alone", "first"]
    run = the_run(slurm)
    assert len(rounds(run)) == 1  # the follower was not sent again on its own
    rows = job_rows(run)
    assert rows[0]["exit_value"] == 3  # worker run --fail-exit: the step raised
    assert rows[1]["exit_status"] == "aborted_before_running" and rows[1]["drms"] is None


def test_client_and_always_steps_go_out_in_later_rounds(local: dict[str, Any],
                                                        tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("rounds")
    a = wf.add_step(add_noted, log, "a", 1, 2)
    b = wf.add_step(add_noted, log, "b", Result(a), 10)
    here = wf.add_step(where, Result(b), on_client=True)
    c = wf.add_step(add_noted, log, "c", Result(here)[1], 100)
    bad = wf.add_step(fail_noted, log, "bad", prerequisites=[a])
    clean = wf.add_step(note, log, "clean", "cleaned", prerequisites=[c, bad], always=True)
    report = wf.run("cluster", **local)
    assert [s.state for s in report] == ["done", "done", "done", "done", "failed", "done"]
    assert report.value(here) == (os.getpid(), 13)  # ran in this process
    assert report.value(c) == 113 and report.value(clean) == "cleaned"
    assert Counter(calls(tmp_path / "calls")) == dict.fromkeys(["a", "b", "c", "bad",
                                                                "clean"], 1)
    specs = rounds(the_run(local))
    # a, b and bad at once; c once the client step gave its value; clean once c and bad ended.
    assert [len(spec["jobs"]) for spec in specs] == [3, 1, 1]
    assert sorted(map(tuple, specs[0]["dependencies"])) == [(0, 1), (0, 2)]
    # The client step's value went in c's arguments; c's job had nothing to read.
    chunk = read_chunk(the_run(local), 3)
    assert chunk.largs[0][1][2:] == (13, 100) and chunk.largs[0][3] == {}


def test_a_retried_step_holds_its_followers_back(local: dict[str, Any], tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("retried")
    flaky = wf.add_step(fail_once_noted, log, "flaky", str(tmp_path / "failed-once"))
    after = wf.add_step(note, log, "after", Result(flaky))
    report = wf.run("cluster", retries=1, backoff=0.0, **local)
    assert report.ok, report
    assert report.value(after) == "flaky"
    assert calls(tmp_path / "calls") == ["flaky", "flaky", "after"]
    # Round 0 ran both (the follower held back); round 1 the retry with its follower.
    assert [spec["jobs"] for spec in rounds(the_run(local))] == [[[0], [1]], [[2], [3]]]


def test_a_step_timeout_fails_that_step_and_its_followers_only(local: dict[str, Any],
                                                               tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("slow")
    slow = wf.add_step(time.sleep, 60)
    wf.add_step(note, log, "after")
    fast = wf.add_step(note, log, "fast", 1, prerequisites=[])
    began = time.monotonic()
    report = wf.run("cluster", timeout=1.0, **local)
    assert time.monotonic() - began < 30
    assert [s.state for s in report] == ["failed", "not run", "done"]
    failure = report[slow].failure
    assert failure is not None and failure.kind == "timeout"
    assert report.value(fast) == 1 and calls(tmp_path / "calls") == ["fast"]


def test_max_parallel_sends_only_ready_steps(local: dict[str, Any], tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("bounded")
    first = wf.add_step(add_noted, log, "first", 1, 1)
    wf.add_step(add_noted, log, "second", Result(first), 1)
    wf.add_step(add_noted, log, "other", 2, 2, prerequisites=[])
    assert wf.run("cluster", max_parallel=2, **local).ok
    # A batch system has no bound per workflow: remotemap holds steps back itself.
    assert [spec["jobs"] for spec in rounds(the_run(local))] == [[[0], [1]], [[2]]]


@pytest.mark.slurm
@pytest.mark.ssh
def test_a_graph_through_a_submitting_host_over_ssh(slurm_cluster: SingleNodeSlurm,
                                                    sshd_host: Any,
                                                    rmtest_can_submit: Path) -> None:
    def who(value: Any) -> tuple[str, Any]:
        import getpass

        return getpass.getuser(), value

    wf = Workflow("over ssh")
    a = wf.add_step(who, 1)
    b = wf.add_step(who, Result(a))
    c = wf.add_step(who, Result(b)[1], prerequisites=[a, b])
    report = wf.run("cluster", scheduler="slurm", host=sshd_host.alias,
                    ssh_config=str(sshd_host.ssh_config), python=str(rmtest_can_submit),
                    slurm_conf=str(slurm_cluster.conf_path), poll_interval=0.5,
                    shared_dir=".cache/remotemap/cluster-graph-test")
    assert report.ok, report
    assert report.value(c) == ("rmtest", ("rmtest", 1))
    home_runs = Path(sshd_host.user.home) / ".cache/remotemap/cluster-graph-test"
    assert list(home_runs.iterdir()) == []  # the run directory was removed over SSH
