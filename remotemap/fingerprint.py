"""Fingerprints: what tells that a stored result came from this function on these arguments.

A stored run reuses a task's result only when the function and the task's arguments have the
fingerprints they had when it was stored. A fingerprint must therefore be the same for the same
function in another interpreter (a resumed run is another process), which the cloudpickle
bytes are not: a class defined in ``__main__`` is pickled with a random id, and a set of
strings in the order of this process's string hashes. So, as joblib.Memory does, a function is
fingerprinted from what decides what it computes:

- its module and qualified name, and its code objects, recursively: bytecode, constants, names,
  argument layout (not the file name or line numbers: moving a function does not change it);
- its defaults, the values in its closure, and the globals its code names; a function or class
  among them defined in the same module (or ``__main__``) is fingerprinted the same way, one
  from another module is named only (``numpy.mean``);
- for a bound method, ``functools.partial`` or callable object: the state it carries.

Data (arguments, defaults, globals) is walked through its pickle reduction (``__reduce_ex__``),
with sets in a canonical order, so equal data gives equal fingerprints in every process. What
cannot be reduced at all (a lock, an open file) makes a task's fingerprint unique (that task
never matches a stored one: it always runs); in a function's globals or closure it counts by
its type only.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import types
from collections.abc import Mapping, Sequence
from typing import Any

#: Bump when the walk changes: fingerprints of different formats never match.
_VERSION = b"remotemap-fingerprint-1"
#: Objects nested deeper than this are not walked (they count by type, or make a task unique).
_MAX_DEPTH = 200
_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_SKIPPED_CLASS_ATTRIBUTES = frozenset({"__dict__", "__weakref__"})


class _Unhashable(Exception):
    """An object with no stable description (no pickle reduction)."""


class _Walk:
    """Feeds a canonical description of objects into one SHA-256."""

    def __init__(self, strict: bool) -> None:
        self.digest = hashlib.sha256(_VERSION)
        #: Objects already described, by id, with their rank: cycles and shared objects.
        self.seen: dict[int, tuple[int, Any]] = {}
        self.strict = strict

    def put(self, tag: str, payload: bytes = b"") -> None:
        self.digest.update(f"{tag}:{len(payload)}:".encode())
        self.digest.update(payload)

    def obj(self, obj: Any, depth: int = 0, home: str | None = None) -> None:
        """Describe ``obj``; ``home`` is the module whose functions and classes are walked."""
        if isinstance(obj, _ATOMS):
            self.put(type(obj).__name__, obj if isinstance(obj, bytes) else repr(obj).encode())
            return
        if id(obj) in self.seen:
            self.put("again", str(self.seen[id(obj)][0]).encode())
            return
        self.seen[id(obj)] = (len(self.seen), obj)  # keep obj alive: its id stays its own
        if depth > _MAX_DEPTH:
            self._unhashable(obj, "nested too deeply")
            return
        try:
            self._compound(obj, depth + 1, home)
        except _Unhashable:
            raise
        except Exception as exc:  # a reduction that fails: no stable description
            self._unhashable(obj, str(exc))

    def _unhashable(self, obj: Any, why: str) -> None:
        if self.strict:
            raise _Unhashable(why)
        self.put("opaque", _name(type(obj)).encode())

    def _compound(self, obj: Any, depth: int, home: str | None) -> None:
        if isinstance(obj, (list, tuple)):
            self.put(type(obj).__name__, str(len(obj)).encode())
            for item in obj:
                self.obj(item, depth, home)
        elif isinstance(obj, dict) and type(obj) is dict:
            self.put("dict", str(len(obj)).encode())
            for key, value in obj.items():  # insertion order is part of a dict's value
                self.obj(key, depth, home)
                self.obj(value, depth, home)
        elif isinstance(obj, (set, frozenset)):
            # Iteration order follows string hashes, which differ between processes.
            parts = sorted(_sub_digest(item, self.strict, home) for item in obj)
            self.put(type(obj).__name__, b"".join(parts))
        elif isinstance(obj, types.CodeType):
            self._code(obj, depth, home)
        elif isinstance(obj, (types.FunctionType, type)):
            self._definition(obj, depth, home)
        elif isinstance(obj, types.ModuleType):
            self.put("module", obj.__name__.encode())
        else:
            self._other(obj, depth, home)

    def _other(self, obj: Any, depth: int, home: str | None) -> None:
        if isinstance(obj, types.MethodType):
            self.put("method")
            self.obj(obj.__func__, depth, home)
            self.obj(obj.__self__, depth, home)
        elif isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType)):
            self.put("builtin", _name(obj).encode())
            owner = getattr(obj, "__self__", None)
            if not isinstance(owner, types.ModuleType):
                self.obj(owner, depth, home)
        elif isinstance(obj, functools.partial):
            self.put("partial")
            for part in (obj.func, obj.args, obj.keywords):
                self.obj(part, depth, home)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.put(type(obj).__name__)
            self.obj(obj.__func__, depth, home)
        elif isinstance(obj, property):
            self.put("property")
            self.obj([obj.fget, obj.fset, obj.fdel], depth, home)
        else:
            self._reduced(obj, depth, home)

    def _reduced(self, obj: Any, depth: int, home: str | None) -> None:
        """Any other object, by what pickle would rebuild it from."""
        reduced = obj.__reduce_ex__(4)
        if isinstance(reduced, str):  # a singleton pickled by name
            self.put("global", f"{type(obj).__module__}.{reduced}".encode())
            return
        # The class by name: a data object's class is not part of the computation.
        self.put("reduce", f"{len(reduced)}:{_name(type(obj))}".encode())
        for position, part in enumerate(reduced):
            if position >= 3 and part is not None:  # list and dict items come as iterators
                part = list(part)
            self.obj(part, depth, home)

    def _code(self, code: types.CodeType, depth: int, home: str | None) -> None:
        self.put("code", code.co_code)
        layout = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                  code.co_flags, code.co_names, code.co_varnames, code.co_freevars,
                  code.co_cellvars, getattr(code, "co_qualname", code.co_name))
        self.put("layout", repr(layout).encode())
        for const in code.co_consts:
            self.obj(const, depth, home)

    def _definition(self, obj: Any, depth: int, home: str | None) -> None:
        """A function or class: walked if defined in ``home`` or ``__main__``, else named."""
        module = getattr(obj, "__module__", None)
        self.put("definition", _name(obj).encode())
        if home is not None and module not in (home, "__main__"):
            return  # someone else's: by name, as pickle sends it
        home = module
        if isinstance(obj, type):
            self.obj(obj.__bases__, depth, home)
            for name in sorted(set(vars(obj)) - _SKIPPED_CLASS_ATTRIBUTES):
                self.put("attribute", name.encode())
                self.obj(vars(obj)[name], depth, home)
            return
        self.obj(obj.__code__, depth, home)
        self.obj((obj.__defaults__, obj.__kwdefaults__), depth, home)
        cells = [_cell_value(cell) for cell in obj.__closure__ or ()]
        self.obj(cells, depth, home)
        names = sorted(_global_names(obj.__code__) & set(obj.__globals__))
        self.obj({name: obj.__globals__[name] for name in names}, depth, home)


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not filled yet
        return _EmptyCell


class _EmptyCell:
    """Stands for a closure cell with no value yet."""


def _global_names(code: types.CodeType) -> set[str]:
    """The global names a function's code (and the code nested in it) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _name(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _label(func: Any) -> str:
    """A readable name for a callable, for messages."""
    if isinstance(func, functools.partial):
        return f"partial({_label(func.func)})"
    if isinstance(func, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, type)):
        return _name(func)
    return _name(type(func))


def _sub_digest(obj: Any, strict: bool, home: str | None) -> bytes:
    walk = _Walk(strict)
    walk.obj(obj, 0, home)
    return walk.digest.digest()


def function_fingerprint(func: Any) -> str:
    """The fingerprint of a function (or any callable) and what it computes with."""
    walk = _Walk(strict=False)
    try:
        if _label(func) == _name(type(func)):  # a callable object: its class's code counts
            walk.obj(type(func))
        walk.obj(func)
    except RecursionError:
        walk.put("opaque", _name(func).encode())
    return f"{_label(func)}:{walk.digest.hexdigest()[:32]}"


def task_fingerprint(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The fingerprint of one task's arguments; unique when they cannot be described."""
    walk = _Walk(strict=True)
    try:
        # Only functions and classes of __main__ among the arguments are walked into.
        walk.obj(tuple(args), 0, "__main__")
        walk.obj(sorted(kwargs.items()), 0, "__main__")  # keyword order does not change a call
    except (_Unhashable, RecursionError):
        return "unique:" + secrets.token_hex(16)
    return walk.digest.hexdigest()[:32]


def task_fingerprints(largs: Sequence[Sequence[Any]],
                      lkwargs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [task_fingerprint(a, k) for a, k in zip(largs, lkwargs, strict=True)]

