"""What the futures contract tests share: the modes, task functions, fixtures, and futures
in each state (built through the public Future API)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

from remotemap import Executor
from tests.backends import RUNNERS, Runner

#: The modes the contract is checked on (ssh and cluster have their own suites).
MODES = ["serial", "local", "local_with_dumps"]


# -- task functions (module level: workers import them by reference) --------------------------

def mul(x: int, y: int) -> int:
    return x * y


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def wait_for(path: str, seconds: float = 60.0) -> str:
    """Block until the file ``path`` exists (the test's way to release a task)."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return path


def wait_then_raise(path: str) -> None:
    wait_for(path)
    raise Exception("this is an exception")


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(params=MODES)
def mode_runner(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param](request)


@pytest.fixture
def executor(mode_runner: Runner) -> Iterator[Executor]:
    ex = mode_runner.executor()
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture
def release(executor: Executor, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``release(name)``: a path a task can wait for; every one is created at teardown, before
    ``executor`` is shut down, so no task is left waiting."""
    made: list[Path] = []

    def path(name: str) -> str:
        made.append(tmp_path / name)
        return str(made[-1])

    yield path
    for p in made:
        p.touch()


def touch(path: str) -> None:
    Path(path).touch()


def done_future(result: Any = None, exception: BaseException | None = None
                ) -> futures.Future[Any]:
    future: futures.Future[Any] = futures.Future()
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
    return future


def cancelled_future(notified: bool) -> futures.Future[Any]:
    future: futures.Future[Any] = futures.Future()
    future.cancel()
    if notified:
        assert not future.set_running_or_notify_cancel()
    return future
