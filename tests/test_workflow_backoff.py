"""``Workflow.run``'s ``backoff``: not given means the default, and a value given is honoured,
0.5 included (the default's own value used to be taken for "not given")."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from remotemap.workflow import Workflow
from tests.test_workflow import (
    state_home,  # noqa: F401  (autouse: workflow runs are indexed in a private state home)
)


def fail_first_time(log: str) -> str:
    """Fails on its first call, succeeds on the next; ``log`` gets when each call began."""
    with open(log, "a") as f:
        f.write(f"{time.monotonic()}\n")
    if len(times_in(log)) == 1:
        raise RuntimeError("first attempt fails")
    return "second attempt"


def times_in(log: str) -> list[float]:
    return [float(line) for line in Path(log).read_text().split()]


def test_an_explicit_backoff_of_half_a_second_counts_as_given() -> None:
    wf = Workflow()
    wf.add_step(str, 1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the executor has its own retry policy: a backoff given too is refused, whatever
        # its value, 0.5 (the default's value) as much as any other
        for backoff in (0.5, 2.0, 0):
            with pytest.raises(ValueError, match="give an executor, or a mode"):
                wf.run(executor=pool, backoff=backoff)
        report = wf.run(executor=pool)  # not given: nothing to refuse
    assert report.ok and report.value(1) == "1"


@pytest.mark.parametrize(("backoff", "least"), [(1.5, 1.5), (None, 0.5)])
def test_backoff_is_the_wait_before_a_retry(tmp_path: Path, backoff: float | None,
                                            least: float) -> None:
    log = str(tmp_path / "calls")
    wf = Workflow()
    step = wf.add_step(fail_first_time, log)
    # serial runs the steps in this process: time.monotonic() is one clock for both calls
    report = (wf.run("serial", retries=1) if backoff is None
              else wf.run("serial", retries=1, backoff=backoff))
    assert report.ok and report.value(step) == "second attempt"
    times = times_in(log)
    assert len(times) == 2
    # the retry waited the backoff given (or the 0.5 s default), never less
    assert times[1] - times[0] >= least
