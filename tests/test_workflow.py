"""Workflows: steps with prerequisites on every backend; results flowing, failures, resume,
options, parallel steps, any executor. The step functions and the fixture here are shared by
test_workflow_graph.py (order, bad graphs, the backend hook), test_workflow_store.py (reruns,
the run directory), test_workflow_status.py (the status report) and test_cluster_workflow.py.

Steps log each call to a file in ``shared_dir`` (one line per call, appended), so the tests
count what ran where the steps ran (an ssh test user on another "host" included), without
depending on timing.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap.workflow import (
    GraphPlan,
    Result,
    Workflow,
    WorkflowFailed,
)
from remotemap.workflow.keys import step_keys
from remotemap.workflow.schedule import run_on_executor
from tests.backends import Runner

# The ssh host has remotemap but not the tests: their step functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
#: The cluster cases run through the isolated login host (tests/backends.py), which shares
#: only ``shared_dir`` with this process, as the ssh cases run on the isolated ssh host.
CLUSTER_ON_LOGIN_HOST = True


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
        pytest.skip("serial runs one step at a time, in order "
                    "(test_workflow_graph.py::test_serial_runs_lowest_ready_id_first)")
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


def test_an_always_step_runs_after_a_failure(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    wf.add_step(fail_noted, log, "work")
    wf.add_step(note, log, "use")
    cleanup = wf.add_step(note, log, "cleanup", prerequisites=[2], always=True)
    report = wf.run("local")
    assert report[cleanup].state == "done" and report[2].state == "not run"
    assert calls(tmp_path / "calls") == ["work", "cleanup"]
