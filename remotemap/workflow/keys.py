"""Stable step keys: what a resumed run matches its stored steps by.

A step's key is its name plus a hash of its function's fingerprint, its arguments'
fingerprint and its prerequisites' keys (Scipion's RESUME compares step names and arguments
the same way). The function's fingerprint (:mod:`remotemap.fingerprint`) covers its code and
what it uses, and the state of bound methods, callable objects and ``functools.partial``
objects (a treatment's parameters, say): editing a function runs its steps again, and so
every step after them, whose keys include theirs. Arguments that cannot be described (a lock)
give the step a key of its own each time: it always runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from remotemap.fingerprint import function_fingerprint, task_fingerprint
from remotemap.workflow.graph import Graph, Result

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _replace_results(obj: Any, keys: Mapping[int, str]) -> Any:
    """``obj`` with each Result standing for the key of its step, not its id, so inserting a
    step elsewhere (which shifts ids) does not change the keys of the steps after it."""
    if isinstance(obj, Result):
        return ("remotemap.Result", keys[obj.step], obj.path)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [_replace_results(item, keys) for item in obj])
    if isinstance(obj, dict):
        return ("dict", [(k, _replace_results(v, keys)) for k, v in obj.items()])
    return obj


def step_keys(workflow: Graph, order: list[int]) -> dict[int, str]:
    """Every step's key; ``order`` must put prerequisites first (``workflow.order()``)."""
    keys: dict[int, str] = {}
    seen: dict[str, int] = {}
    for step_id in order:
        step = workflow.step(step_id)
        digest = hashlib.sha256(function_fingerprint(step.func).encode())
        arguments = _replace_results((step.args, step.kwargs), keys)
        digest.update(task_fingerprint((arguments,), {}).encode())
        digest.update(repr(sorted(keys[p] for p in step.prerequisites)).encode())
        digest.update(repr((step.on_client, step.always)).encode())
        base = f"{_UNSAFE.sub('_', step.name)[:60]}-{digest.hexdigest()[:16]}"
        # Two identical steps (same call, same prerequisites) are told apart by their rank.
        seen[base] = seen.get(base, 0) + 1
        keys[step_id] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return keys
