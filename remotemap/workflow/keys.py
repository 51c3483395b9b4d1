"""Stable step keys: what a resumed run matches its stored steps by.

A step's key is its name plus a hash of the function's qualified name, its pickled arguments
and its prerequisites' keys (Scipion's RESUME compares step names and arguments the same
way). The function's code is not hashed: editing a function's body keeps its finished steps;
rename the step, or use a new run directory, to redo them. Bound methods, callable objects
and ``functools.partial`` objects hash their state too (a treatment's parameters, say).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import re
import secrets
import types
from collections.abc import Mapping
from typing import Any

from remotemap.execution import dumps
from remotemap.workflow.graph import Result, Workflow

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _stable_bytes(obj: Any) -> bytes:
    """The pickle of ``obj``: plain pickle where it works (stable from run to run for data),
    cloudpickle for what plain pickle refuses (lambdas, local classes). What cannot be
    pickled at all (a lock, say: fine for ``serial``) gets random bytes, so the step never
    matches a stored one and always runs: it cannot be told to be the same."""
    try:
        return pickle.dumps(obj, protocol=4)
    except Exception:
        pass
    try:
        return dumps(obj)
    except Exception:
        return secrets.token_bytes(16)


def callable_identity(func: Any) -> tuple[str, tuple[Any, ...]]:
    """The function's qualified name, and the state a call depends on beyond its arguments."""
    if isinstance(func, functools.partial):
        name, state = callable_identity(func.func)
        return name, (*state, func.args, func.keywords)
    bound_to = getattr(func, "__self__", None)
    if isinstance(func, types.MethodType) and not isinstance(bound_to, types.ModuleType):
        inner = func.__func__
        name = f"{inner.__module__}.{inner.__qualname__}"
        return name, (bound_to,)
    if isinstance(func, types.FunctionType):
        return f"{func.__module__}.{func.__qualname__}", ()
    if isinstance(func, types.BuiltinFunctionType):  # len, or a bound built-in like [].append
        owner = None if isinstance(bound_to, types.ModuleType) else bound_to
        return f"{func.__module__}.{func.__qualname__}", (owner,)
    cls = type(func)  # a callable object: its attributes decide what it does
    return f"{cls.__module__}.{cls.__qualname__}", (func,)


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


def step_keys(workflow: Workflow, order: list[int]) -> dict[int, str]:
    """Every step's key; ``order`` must put prerequisites first (``workflow.order()``)."""
    keys: dict[int, str] = {}
    seen: dict[str, int] = {}
    for step_id in order:
        step = workflow.step(step_id)
        name, state = callable_identity(step.func)
        digest = hashlib.sha256(name.encode())
        digest.update(_stable_bytes(state))
        digest.update(_stable_bytes(_replace_results((step.args, step.kwargs), keys)))
        digest.update(repr(sorted(keys[p] for p in step.prerequisites)).encode())
        digest.update(repr((step.on_client, step.always)).encode())
        base = f"{_UNSAFE.sub('_', step.name)[:60]}-{digest.hexdigest()[:16]}"
        # Two identical steps (same call, same prerequisites) are told apart by their rank.
        seen[base] = seen.get(base, 0) + 1
        keys[step_id] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return keys
