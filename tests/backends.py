"""The contract suite's view of each backend: how to call it and what it promises.

A backend added later (ssh, cluster) adds a ``Runner`` factory here; every contract test then
runs against it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from remotemap import remote_map


@dataclass
class Runner:
    mode: str
    options: dict[str, Any] = field(default_factory=dict)
    #: A task that kills its process fails alone (serial: it would kill the test run).
    isolates_crashes: bool = True
    #: Arguments and results cross a process boundary, so unpicklable ones fail their task.
    pickles: bool = True

    def map(self, func: Callable[..., Any], largs: Sequence[Any] | None = None,
            lkwargs: Sequence[Mapping[str, Any]] | None = None, **options: Any) -> list[Any]:
        return remote_map(func, largs, lkwargs, mode=self.mode, progress=False,
                          **{**self.options, **options})


def _serial(request: pytest.FixtureRequest) -> Runner:
    return Runner("serial", isolates_crashes=False, pickles=False)


def _local(request: pytest.FixtureRequest) -> Runner:
    return Runner("local", {"n_jobs": 2})


def _dumps(request: pytest.FixtureRequest) -> Runner:
    return Runner("local_with_dumps", {"n_jobs": 2})


RUNNERS: dict[str, Callable[[pytest.FixtureRequest], Runner]] = {
    "serial": _serial,
    "local": _local,
    "local_with_dumps": _dumps,
}


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param](request)
