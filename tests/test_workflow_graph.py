"""Workflows: the graph itself. The serial order, bad graphs and bad options refused before
anything runs, and a backend that is given the whole graph at once.

The step functions and the fixture these tests share are in test_workflow.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from remotemap.backends import _REGISTRY
from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.driver import Policy
from remotemap.state import state_dir
from remotemap.workflow import (
    GraphError,
    GraphPlan,
    Result,
    StepOutcome,
    Workflow,
    run_here,
)
from remotemap.workflow.run import GRAPH_RUNNERS
from tests.test_workflow import (
    add_noted,
    calls,
    note,
    state_home,  # noqa: F401  (autouse: workflow runs are indexed in a private state home)
)

# -- the serial order ---------------------------------------------------------------------------


def test_serial_runs_lowest_ready_id_first(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow("order")
    wf.add_step(note, log, "1", prerequisites=[2])  # a prerequisite added after it
    wf.add_step(note, log, "2", prerequisites=[])
    wf.add_step(note, log, "3", prerequisites=[])
    wf.add_step(note, log, "4", prerequisites=[1])
    assert wf.order() == [2, 1, 3, 4]
    assert wf.run("serial").ok
    assert calls(tmp_path / "calls") == ["2", "1", "3", "4"]


# -- bad input: an error before anything runs ---------------------------------------------------


def _no_step_ran(log: Path) -> None:
    assert not log.exists()
    assert not state_dir("workflows").exists() or not any(state_dir("workflows").iterdir())


def test_unknown_prerequisite_names_the_step(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    wf.add_step(note, log, "a")
    wf.add_step(note, log, "b", prerequisites=[1, 7], step_name="merge")
    with pytest.raises(GraphError, match=r"step 2 'merge': prerequisite 7 is not a step id "
                                         r"\(the steps are 1\.\.2\)") as info:
        wf.run("serial")
    assert info.value.step == 2
    _no_step_ran(tmp_path / "calls")


def test_a_cycle_is_named(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    wf.add_step(note, log, "free", prerequisites=[])
    wf.add_step(note, log, "x", prerequisites=[4], step_name="x")
    wf.add_step(note, log, "y", step_name="y")
    wf.add_step(note, log, "z", step_name="z")
    with pytest.raises(GraphError, match="the steps form a cycle: step 2 'x' -> step 3 'y' -> "
                                         "step 4 'z' -> step 2 'x'"):
        wf.run("local")
    wf2 = Workflow()
    wf2.add_step(note, log, "self", prerequisites=[1])
    with pytest.raises(GraphError, match="cycle: step 1 'note' -> step 1 'note'"):
        wf2.run("serial")
    _no_step_ran(tmp_path / "calls")


def test_bad_steps_are_refused_when_added() -> None:
    wf = Workflow()
    with pytest.raises(GraphError, match="step 1 'load': the step function must be callable, "
                                         "got int: 5"):
        wf.add_step(5, step_name="load")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="step 1 'note': prerequisite '1' is not a step id"):
        wf.add_step(note, prerequisites=["1"])  # type: ignore[list-item]
    with pytest.raises(GraphError, match="prerequisites must be a list of step ids"):
        wf.add_step(note, prerequisites=1)  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="step 1 'note': prerequisite 'x' is not a step id"):
        wf.add_step(note, [Result("x")])  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="cannot use the results of steps"):
        wf.add_step(note, Result(1), always=True)
    assert len(wf) == 0


def test_bad_run_options_before_anything_runs(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    wf.add_step(note, log, "a")
    with pytest.raises(ValueError, match="unknown mode 'nope'"):
        wf.run("nope")
    with pytest.raises(ValueError, match="max_parallel must be"):
        wf.run("serial", max_parallel=0)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").touch()
    with pytest.raises(ValueError, match="not a workflow run directory"):
        wf.run("serial", run_dir=tmp_path / "busy")
    _no_step_ran(tmp_path / "calls")


# -- the backend hook ---------------------------------------------------------------------------


class GraphTestBackend(Backend):
    """A mode that takes the whole graph at once (registered in ``GRAPH_RUNNERS``)."""

    name = "graphtest"
    plans: ClassVar[list[list[int]]] = []

    def open(self, function: Callable[..., Any], options: TaskOptions) -> Session:
        raise AssertionError("a graph backend is given the plan, not tasks")

    def run_graph(self, plan: GraphPlan, policy: Policy) -> Iterator[StepOutcome]:
        GraphTestBackend.plans.append(plan.to_run())
        values = dict(plan.reused)
        for step_id in plan.to_run():
            if step_id == plan.order[-1]:
                return  # leave the last step out: the report must say it did not run
            outcome = run_here(plan.step(step_id), values)
            values[step_id] = outcome.value
            yield outcome


def test_a_backend_with_run_graph_gets_the_whole_graph(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setitem(_REGISTRY, "graphtest", f"{__name__}:GraphTestBackend")
    monkeypatch.setitem(GRAPH_RUNNERS, "graphtest",
                        lambda backend, plan, policy: backend.run_graph(plan, policy))
    GraphTestBackend.plans.clear()
    log = str(tmp_path / "calls")
    wf = Workflow("hooked")
    a = wf.add_step(add_noted, log, "a", 1, 2)
    wf.add_step(add_noted, log, "b", Result(a), 3)
    wf.add_step(note, log, "c")
    report = wf.run("graphtest")
    assert GraphTestBackend.plans == [[1, 2, 3]]
    assert report.value(2) == 6
    assert report[3].state == "not run" and report[3].reason == "the run ended before it could run"
