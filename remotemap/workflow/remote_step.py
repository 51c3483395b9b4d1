"""A workflow step run by a batch job: its prerequisites' values read from the shared disk.

When a workflow's steps go to the batch system as jobs with dependencies (``cluster``),
the process that submitted them does not see a prerequisite's value before the job after it
starts. So each step travels as ``call_step(func, args, kwargs, sources, token)``: the
:class:`~remotemap.workflow.graph.Result` placeholders left in ``args`` and ``kwargs`` are
resolved in the job, from the outcome files (``sources``: step id -> path) the prerequisites'
jobs wrote, each checked against the run's key (held by the worker running the step) before it
is unpickled. Imported by the worker: standard library and remotemap's protocol only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from remotemap.errors import RemotemapError, TamperedFile
from remotemap.protocol import open_outcome, outcome_chunk_id, read_file, worker_key
from remotemap.workflow.graph import resolve


class PrerequisiteUnavailable(RemotemapError, RuntimeError):
    """A prerequisite's outcome file is missing, from another run, or holds a failure."""


def prerequisite_value(step: int, path: str, token: str) -> Any:
    """Step ``step``'s value in the outcome file ``path``, judged by ``open_outcome`` like
    every outcome; PrerequisiteUnavailable saying why there is none."""
    chunk_id = outcome_chunk_id(path)
    if chunk_id is None:
        raise PrerequisiteUnavailable(f"step {step}'s outcome {path} is not named as an "
                                      "outcome file")
    try:
        data = read_file(path)
    except OSError as exc:
        raise PrerequisiteUnavailable(f"step {step}'s outcome cannot be read from {path}: "
                                      f"{exc}") from None
    try:
        result = open_outcome(worker_key(), chunk_id, data, token, path)
    except TamperedFile as exc:
        raise PrerequisiteUnavailable(f"step {step}'s outcome was refused: {exc}") from None
    if result is None:
        raise PrerequisiteUnavailable(f"{path} is not step {step}'s outcome in this run")
    if not result.values:
        what = result.failures[0].message if result.failures else "no value"
        raise PrerequisiteUnavailable(f"step {step} has no value in {path}: {what}")
    return result.values[0]


def call_step(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              sources: Mapping[int, str], token: str) -> Any:
    """Call ``func`` with the Results of the steps in ``sources`` replaced by their values."""
    values = {step: prerequisite_value(step, path, token) for step, path in sources.items()}
    return func(*resolve(args, values), **resolve(kwargs, values))
