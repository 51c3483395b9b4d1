"""Workflows: steps with prerequisites on every backend; failures, resume, bad graphs, status.

Steps log each call to a file in ``shared_dir`` (one line per call, appended), so the tests
count what ran where the steps ran (an ssh test user on another "host" included), without
depending on timing.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle
import pytest

from remotemap.backends import _REGISTRY
from remotemap.backends.base import Backend, Session, TaskOptions
from remotemap.cli import main as cli_main
from remotemap.cli.workflow_status import run_state
from remotemap.driver import Policy
from remotemap.errors import UnsafePath
from remotemap.execution import this_host
from remotemap.state import state_dir
from remotemap.workflow import (
    GraphError,
    GraphPlan,
    Result,
    StepOutcome,
    Workflow,
    WorkflowFailed,
    run_here,
)
from remotemap.workflow.keys import step_keys
from remotemap.workflow.run import GRAPH_RUNNERS
from remotemap.workflow.schedule import run_on_executor
from remotemap.workflow.store import (
    RunDirectoryBusy,
    _prune_index,
    list_workflow_runs,
)
from tests.backends import Runner

# The ssh host has remotemap but not the tests: their step functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """Workflow runs are indexed under a private state directory, not the real one."""
    home = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


# -- step functions (they run on the workers) ---------------------------------------------------


def note(log: str, name: str, value: Any = None) -> Any:
    with open(log, "a") as f:
        f.write(name + "\n")
    return value


def add_noted(log: str, name: str, a: int, b: int) -> int:
    return int(note(log, name, a + b))


def join_noted(log: str, name: str, *values: Any) -> list[Any]:
    return list(note(log, name, list(values)))


def fail_noted(log: str, name: str, flag: str | None = None) -> str:
    note(log, name)
    if flag is None or os.path.exists(flag):
        raise ValueError(f"{name} was told to fail")
    return name


def start_end(log: str, name: str) -> str:
    note(log, f"start {name}")
    return str(note(log, f"end {name}", name))


def meet(folder: str, me: str, other: str, limit: float = 60.0) -> bool:
    """Leave a mark, then wait for ``other``'s: both return True only if they ran at once."""
    Path(folder, me).touch()
    deadline = time.monotonic() + limit  # a bound so a bug fails the test, not hangs it
    while time.monotonic() < deadline:
        if Path(folder, other).exists():
            return True
        time.sleep(0.01)
    return False


def fail_once_noted(log: str, name: str, marker: str) -> str:
    note(log, name)
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError(f"{name}: the first attempt fails")
    return name


def environment(name: str) -> str | None:
    return os.environ.get(name)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def run(wf: Workflow, runner: Runner, **options: Any) -> Any:
    return wf.run(runner.mode, **{**runner.options, **options})


# -- graphs on every backend --------------------------------------------------------------------


def test_chain_is_the_default_and_results_flow(runner: Runner, shared_dir: Path) -> None:
    log = str(shared_dir / "calls")
    wf = Workflow("chain")
    a = wf.add_step(add_noted, log, "a", 1, 0)
    b = wf.add_step(add_noted, log, "b", Result(a), 10)
    c = wf.add_step(add_noted, log=log, name="c", a=Result(b), b=100)  # keywords work too
    assert [step.prerequisites for step in wf.steps] == [(), (a,), (b,)]
    report = run(wf, runner)
    assert report.ok, report
    assert [report.value(s) for s in (a, b, c)] == [1, 11, 111]
    assert calls(shared_dir / "calls") == ["a", "b", "c"]


def test_fan_out_fan_in_as_in_scipion(runner: Runner, shared_dir: Path) -> None:
    """The seed's example: register steps depend only on readXmlFileStep, so they may run in
    parallel; closeSetStep depends on all of them."""
    log = str(shared_dir / "calls")
    wf = Workflow("movies")
    read = wf.add_step(note, log, "read", ["m1", "m2", "m3", "m4"], step_name="readXmlFileStep")
    registered = [wf.add_step(note, log, f"register {i}", Result(read)[i], prerequisites=[read],
                              step_name="registerImageStep") for i in range(4)]
    close = wf.add_step(join_noted, log, "close", *[Result(r) for r in registered],
                        prerequisites=registered, step_name="closeSetStep")
    assert all(wf.step(r).prerequisites == (read,) for r in registered)
    report = run(wf, runner)
    assert report.ok, report
    assert report.value(close) == ["m1", "m2", "m3", "m4"]
    order = calls(shared_dir / "calls")
    assert order[0] == "read" and order[-1] == "close"
    assert Counter(order) == Counter(["read", "close", *(f"register {i}" for i in range(4))])


def test_diamond(runner: Runner, shared_dir: Path) -> None:
    log = str(shared_dir / "calls")
    wf = Workflow("diamond")
    top = wf.add_step(add_noted, log, "top", 1, 1)
    left = wf.add_step(add_noted, log, "left", Result(top), 10, prerequisites=[top])
    right = wf.add_step(add_noted, log, "right", Result(top), 100, prerequisites=[top])
    # No prerequisites given: follows `right`; using Result(left) adds `left`.
    bottom = wf.add_step(add_noted, log, "bottom", Result(left), Result(right))
    assert wf.step(bottom).prerequisites == (left, right)
    report = run(wf, runner)
    assert report.value(bottom) == 12 + 102
    order = calls(shared_dir / "calls")
    assert order[0] == "top" and order[-1] == "bottom" and sorted(order[1:3]) == ["left", "right"]


def test_a_failure_stops_its_followers_only(runner: Runner, shared_dir: Path) -> None:
    log = str(shared_dir / "calls")
    wf = Workflow("failing")
    a = wf.add_step(note, log, "a", 1)
    b = wf.add_step(fail_noted, log, "b")
    c = wf.add_step(note, log, "c")
    d = wf.add_step(join_noted, log, "d", Result(c))
    e = wf.add_step(note, log, "e", prerequisites=[a])
    f = wf.add_step(note, log, "f", prerequisites=[])
    report = run(wf, runner)
    assert not report.ok
    assert [step.state for step in report] == ["done", "failed", "not run", "not run", "done",
                                               "done"]
    assert report[b].reason.startswith("ValueError: b was told to fail")
    assert report[b].failure is not None and "fail_noted" in report[b].failure.traceback
    for blocked in (c, d):
        assert report[blocked].reason == "step 2 'fail_noted' failed"
        assert report[blocked].blocked_by == (b,)
    assert sorted(calls(shared_dir / "calls")) == ["a", "b", "e", "f"]
    with pytest.raises(ValueError, match="step 3 'note' has no value: not run"):
        report.value(c)
    with pytest.raises(WorkflowFailed) as info:
        report.raise_if_failed()
    assert "not run: step 2 'fail_noted' failed" in str(info.value)
    assert report.value(e) is None and report.value(f) is None


def test_resume_reruns_only_what_did_not_finish(runner: Runner, shared_dir: Path,
                                                tmp_path: Path) -> None:
    log, flag = str(shared_dir / "calls"), shared_dir / "fail-now"
    flag.touch()

    def build() -> Workflow:
        wf = Workflow("resumable")
        a = wf.add_step(note, log, "a", "A")
        wf.add_step(fail_noted, log, "b", str(flag))
        wf.add_step(join_noted, log, "c", Result(a))
        wf.add_step(note, log, "d", prerequisites=[a])
        return wf

    first = run(build(), runner, run_dir=tmp_path / "run")
    assert [s.state for s in first] == ["done", "failed", "not run", "done"]
    assert first.run_dir == (tmp_path / "run").resolve()
    flag.unlink()
    second = run(build(), runner, run_dir=tmp_path / "run")
    assert second.ok, second
    assert [s.reused for s in second] == [True, False, False, True]
    assert second.value(3) == ["A"]  # the reused step's value, loaded from the run directory
    third = run(build(), runner, run_dir=tmp_path / "run")
    assert all(s.reused for s in third)
    assert Counter(calls(shared_dir / "calls")) == {"a": 1, "b": 2, "c": 1, "d": 1}


def test_timeout_retries_and_env_apply_to_every_step(runner: Runner, shared_dir: Path) -> None:
    log = str(shared_dir / "calls")
    wf = Workflow("options")
    slow = wf.add_step(time.sleep, 60, prerequisites=[])
    flaky = wf.add_step(fail_once_noted, log, "flaky", str(shared_dir / "once"),
                        prerequisites=[])
    env = wf.add_step(environment, "RM_STEP_ENV", prerequisites=[])
    after = wf.add_step(note, log, "after", prerequisites=[slow])
    began = time.monotonic()
    report = run(wf, runner, timeout=2.0, retries=1, backoff=0.0,
                 env={"RM_STEP_ENV": "a b $c"})
    assert time.monotonic() - began < 45
    assert [s.state for s in report] == ["failed", "done", "done", "not run"]
    failure = report[slow].failure
    assert failure is not None and failure.kind == "timeout" and failure.attempts == 2
    assert report.value(flaky) == "flaky" and report.value(env) == "a b $c"
    assert report[after].reason == "step 1 'sleep' failed"
    assert calls(shared_dir / "calls") == ["flaky", "flaky"]


def test_max_parallel_one_runs_steps_one_after_another(runner: Runner,
                                                       shared_dir: Path) -> None:
    log = str(shared_dir / "calls")
    wf = Workflow("one at a time")
    for name in "wxyz":
        wf.add_step(start_end, log, name, prerequisites=[])
    assert run(wf, runner, max_parallel=1).ok
    # Lowest ready id first, each step ended before the next started.
    assert calls(shared_dir / "calls") == [f"{e} {n}" for n in "wxyz" for e in ("start", "end")]


def test_ready_steps_run_at_once(runner: Runner, shared_dir: Path) -> None:
    if runner.mode == "serial":
        pytest.skip("serial runs one step at a time, in order (tested below)")
    wf = Workflow("at once")
    first = wf.add_step(meet, str(shared_dir), "a", "b", prerequisites=[])
    second = wf.add_step(meet, str(shared_dir), "b", "a", prerequisites=[])
    report = run(wf, runner, max_parallel=2)
    assert report.value(first) is True and report.value(second) is True


class InstantExecutor(concurrent.futures.Executor):
    """Runs each call inside ``submit``: a step is done the moment it goes out, so how many
    went out before the workflow collected them is how many it let out at once."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.submitted += 1
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


@pytest.mark.parametrize(("bound", "most"), [(1, 1), (2, 2), (4, 4), (None, 6)])
def test_max_parallel_bounds_the_steps_out_at_once(bound: int | None, most: int) -> None:
    wf = Workflow()
    for i in range(6):
        wf.add_step(str, i, prerequisites=[])
    wf.add_step(str, "after all", prerequisites=list(range(1, 7)))
    order = wf.order()
    executor = InstantExecutor()
    out_at_once = []
    plan = GraphPlan(wf, order, step_keys(wf, order), max_parallel=bound)
    for collected, _ in enumerate(run_on_executor(plan, executor)):
        out_at_once.append(executor.submitted - collected)
    assert max(out_at_once) == most
    assert executor.submitted == 7


def test_any_concurrent_futures_executor_runs_a_workflow(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    a = wf.add_step(add_noted, log, "a", 1, 2)
    b = wf.add_step(add_noted, log, "b", Result(a), 3)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        report = wf.run(executor=pool)
        with pytest.raises(ValueError, match="give an executor, or a mode"):
            wf.run("local", executor=pool)
        with pytest.raises(ValueError, match="give an executor, or a mode"):
            wf.run(executor=pool, timeout=5)
    assert report.value(b) == 6 and report.mode == "ThreadPoolExecutor"


# -- serial order, changed steps, the backend hook ----------------------------------------------


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


def test_a_changed_step_reruns_with_its_followers(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")

    def build(x: int) -> Workflow:
        wf = Workflow("changing")
        head = wf.add_step(note, log, "head", 0)
        changed = wf.add_step(note, log, "changed", x, prerequisites=[head])
        wf.add_step(join_noted, log, "after", Result(changed))
        wf.add_step(note, log, "other", prerequisites=[head])
        return wf

    build(1).run("serial", run_dir=tmp_path / "run")
    report = build(2).run("serial", run_dir=tmp_path / "run")
    assert [s.reused for s in report] == [True, False, False, True]
    assert report.value(3) == [2]
    assert Counter(calls(tmp_path / "calls")) == {"head": 1, "changed": 2, "after": 2, "other": 1}


def test_an_edited_step_function_reruns_with_the_steps_after_it(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    source = "def scaled(note, log, x):\n    return note(log, 'scaled', 2 * x)\n"

    def build(code: str) -> Workflow:
        steps = types.ModuleType("edited_steps")
        exec(code, steps.__dict__)
        wf = Workflow("edited")
        head = wf.add_step(note, log, "head", 5)
        scaled = wf.add_step(steps.scaled, note, log, Result(head))
        wf.add_step(join_noted, log, "after", Result(scaled))
        wf.add_step(note, log, "other", prerequisites=[head])
        return wf

    build(source).run("serial", run_dir=tmp_path / "run")
    report = build(source.replace("2 * x", "3 * x")).run("serial", run_dir=tmp_path / "run")
    assert [s.reused for s in report] == [True, False, False, True]
    assert report.value(3) == [15]  # not the 10 stored by the function before the edit
    assert Counter(calls(tmp_path / "calls")) == {"head": 1, "scaled": 2, "after": 2, "other": 1}


class _Planted:
    """A pickle someone put in a run directory: loading it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def test_a_tampered_step_value_is_not_unpickled_and_the_step_reruns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log, marker = str(tmp_path / "calls"), tmp_path / "pwned"

    def build() -> Workflow:
        wf = Workflow("tampered")
        first = wf.add_step(note, log, "first", 1)
        wf.add_step(join_noted, log, "second", Result(first))
        return wf

    assert build().run("serial", run_dir=tmp_path / "run").ok
    first_value = next((tmp_path / "run" / "steps").glob("note-*.pkl"))
    first_value.write_bytes(pickle.dumps(_Planted(marker)))
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        report = build().run("serial", run_dir=tmp_path / "run")
    assert not marker.exists()
    assert f"{first_value} failed its integrity check" in caplog.text
    # The first step runs again, and so the step after it.
    assert report.ok and [s.reused for s in report] == [False, False]
    assert calls(tmp_path / "calls") == ["first", "second", "first", "second"]


@pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user: root only")
def test_a_workflow_run_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    log, marker, run_dir = str(tmp_path / "calls"), tmp_path / "pwned", tmp_path / "theirs"
    wf = Workflow("foreign")
    wf.add_step(note, log, "only", 1)
    assert wf.run("serial", run_dir=run_dir).ok
    for path in (run_dir / "steps").iterdir():
        path.write_bytes(pickle.dumps(_Planted(marker)))
    for path in [run_dir, *run_dir.rglob("*")]:
        os.lchown(path, 65534, 65534)
    with pytest.raises(UnsafePath, match=rf"{run_dir} is owned by uid 65534"):
        wf.run("serial", run_dir=run_dir)
    assert not marker.exists()


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


def test_an_always_step_runs_after_a_failure(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    wf.add_step(fail_noted, log, "work")
    wf.add_step(note, log, "use")
    cleanup = wf.add_step(note, log, "cleanup", prerequisites=[2], always=True)
    report = wf.run("local")
    assert report[cleanup].state == "done" and report[2].state == "not run"
    assert calls(tmp_path / "calls") == ["work", "cleanup"]


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


def wait_for_file(path: str, limit: float = 60.0) -> str:
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


def test_one_run_directory_takes_one_run_at_a_time(tmp_path: Path) -> None:
    go, started = tmp_path / "go", tmp_path / "started"

    def build() -> Workflow:
        wf = Workflow("shared dir")
        wf.add_step(Path.touch, started)
        wf.add_step(wait_for_file, str(go))
        return wf

    first: list[Any] = []
    thread = threading.Thread(
        target=lambda: first.append(build().run("local", run_dir=tmp_path / "run")))
    thread.start()
    try:
        wait_for_file(str(started))
        with pytest.raises(RunDirectoryBusy, match=rf"{tmp_path / 'run'} is in use by "
                                                   rf"process {os.getpid()} on "):
            build().run("local", run_dir=tmp_path / "run")
    finally:
        go.touch()
        thread.join(60)
    assert first[0].ok
    again = build().run("local", run_dir=tmp_path / "run")  # free again once it ended
    assert again.ok and all(step.reused for step in again)


def test_a_step_with_unpicklable_arguments_runs_on_serial_and_is_never_reused(
        tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    lock = threading.Lock()  # no pickle takes it: the step cannot be matched on resume

    def build() -> Workflow:
        wf = Workflow("unpicklable")
        wf.add_step(note, log, "plain")
        wf.add_step(note, log, "locked", lock)
        return wf

    for _ in range(2):
        assert build().run("serial", run_dir=tmp_path / "run").ok
    assert Counter(calls(tmp_path / "calls")) == {"plain": 1, "locked": 2}


def test_status_tells_a_run_whose_process_died() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    report = {"state": "running", "host": this_host(), "pid": gone.pid}
    assert run_state(report).startswith("stopped half-way (its process is gone")
    assert run_state({**report, "pid": os.getpid()}) == "running"
    assert run_state({**report, "state": "done"}) == "done"
