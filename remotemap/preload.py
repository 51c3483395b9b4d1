"""The modules a pickle will import when it loads, found without loading it; and importing them.

The worker's fork server (``remotemap.worker``) imports them in its own process before it forks
the child that runs a chunk, so that children inherit them imported: with ``Executor`` (and so
joblib) each chunk carries its own callables, and without this every child would import, say,
scikit-learn again. The pickle is never unpickled here: its opcodes are walked
(``pickletools.genops``) for

- the globals it looks up (``GLOBAL``, ``INST``, ``STACK_GLOBAL`` - the latter takes the two
  strings pushed before it, literally or from the memo): the module part is imported;
- cloudpickle's imports by name (a function or class pickled by value names the modules its
  globals use as ``subimport("pkg.mod")``): the string the call takes is imported.

The opcodes are read with ``pickletools``' table of them, but the walk skips over data (an
array's buffer, a long string) instead of reading it, as ``pickletools.genops`` would: a
large argument costs the server a seek, not two copies before each fork.

The walk follows what picklers write (the module and name strings right before
``STACK_GLOBAL``), it does not emulate the whole unpickler stack: a hand-made pickle may hide
a name from it, which only means that module is imported by the child, as without preloading.
Like the worker, this module imports only the standard library.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import pickletools
import struct
import sys
from collections.abc import Iterator

log = logging.getLogger("remotemap.worker")

_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
#: Arguments whose length comes first, by pickletools' size code: its size and struct format.
_LENGTHS = {pickletools.TAKEN_FROM_ARGUMENT1: "<B", pickletools.TAKEN_FROM_ARGUMENT4: "<i",
            pickletools.TAKEN_FROM_ARGUMENT4U: "<I", pickletools.TAKEN_FROM_ARGUMENT8U: "<Q"}
#: Opcodes that push a string the next opcodes may use as a module or global name.
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
#: The opcodes whose argument the walk reads; any other's is skipped over, unread.
_READ = _STRINGS | _GETS | _PUTS | {"GLOBAL", "INST"}
#: A longer string is data, never a module name: skipped over, unread.
_NAME_MAX = 1024
#: Opcodes walked per file at most (some 20 ms): past them (a chunk of many small objects,
#: whose globals come first anyway) the names left are imported by the child, as without
#: preloading, rather than holding up the server before each fork.
MAX_OPCODES = 20_000
#: Globals that import the module named by their one argument when the pickle loads.
_IMPORTERS = frozenset({("cloudpickle.cloudpickle", "subimport"), ("cloudpickle", "subimport"),
                        ("cloudpickle.cloudpickle", "_import_module"),
                        ("importlib", "import_module")})
#: Never imported ahead: the caller's script (its globals travel by value) and what is built in.
_SKIP = frozenset({"__main__", "__mp_main__", "builtins", "__builtin__"})


def referenced_modules(data: bytes) -> list[str]:
    """The modules the pickles in ``data`` (one or more back to back) name, in order, once
    each. A malformed pickle ends the walk: what was found before it is returned."""
    if data[:2] in (b"\x80\x04", b"\x80\x05") and b"\x93" not in data:
        # Protocol 4 and up name globals only with STACK_GLOBAL: none here (remotemap writes
        # the pickles of a file with one protocol). Spares the walk of pure data.
        return []
    found: dict[str, None] = {}
    stream = io.BytesIO(data)  # shares the bytes, no copy
    budget = [MAX_OPCODES]
    with contextlib.suppress(Exception):  # a broken pickle is the child's to report
        while stream.tell() < len(data) and budget[0] > 0:
            for name in _walk(stream, budget):
                found[name] = None
    return list(found)


def _opcodes(stream: io.BytesIO, budget: list[int]) -> Iterator[tuple[str, bool, object]]:
    """One pickle's opcodes up to its STOP or the end of ``budget[0]``, which counts them down:
    (name, whether it pushes, the argument if the walk needs it, else None). Like
    ``pickletools.genops``, but data (array buffers, long strings) is skipped over rather than
    read: a chunk's 100 MB array costs a seek, not two copies."""
    while budget[0] > 0:
        budget[0] -= 1
        op = _OPS.get(stream.read(1))
        if op is None:
            raise ValueError(f"not a pickle opcode at byte {stream.tell() - 1}")
        value: object = None
        if op.arg is not None:
            value = _argument(stream, op.arg, op.name in _READ)
        yield op.name, bool(op.stack_after), value
        if op.name == "STOP":
            return


def _argument(stream: io.BytesIO, arg: pickletools.ArgumentDescriptor, read: bool) -> object:
    """The opcode's argument, read if ``read`` and not over-long, else skipped (None)."""
    if arg.n >= 0 and not read:
        stream.seek(arg.n, io.SEEK_CUR)
        return None
    fmt = _LENGTHS.get(arg.n)
    if fmt is None:  # a fixed size to read, or up to a newline
        return arg.reader(stream)
    (length,) = struct.unpack(fmt, stream.read(struct.calcsize(fmt)))
    if read and 0 <= length <= _NAME_MAX:
        return stream.read(length).decode("utf-8", "surrogatepass")
    stream.seek(length, io.SEEK_CUR)
    return None


def _walk(stream: io.BytesIO, budget: list[int]) -> Iterator[str]:
    """One pickle's module names; the stream is left after its STOP."""
    recent: list[str | None] = [None, None]  # the values of the last two pushes
    memo: dict[int, str | None] = {}
    importer_call = False  # an importer global was pushed: its argument is the next push
    for name, pushes, arg in _opcodes(stream, budget):
        pushed: str | None = None
        if name in _STRINGS and isinstance(arg, str):
            pushed = arg
        elif name in _GETS and isinstance(arg, int):
            pushed = memo.get(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1]
            continue
        elif name in _PUTS and isinstance(arg, int):
            memo[arg] = recent[-1]
            continue
        elif not pushes or name == "MARK":
            # Pushes nothing (SETITEMS, FRAME, STOP...), or a mark before a call's arguments
            # (protocols 0 and 1): the last pushes stand.
            continue
        module, attribute = _global(name, arg, recent)
        if importer_call and pushed:
            yield pushed
        importer_call = (module, attribute) in _IMPORTERS
        if module:
            yield module
        recent = [recent[-1], pushed]


def _global(opcode: str, arg: object, recent: list[str | None]) -> tuple[str | None, str | None]:
    """The module and name a global-loading opcode looks up, else (None, None)."""
    if opcode == "STACK_GLOBAL":
        return recent[-2], recent[-1]
    if opcode in ("GLOBAL", "INST") and isinstance(arg, str) and " " in arg:
        module, attribute = arg.split(" ", 1)
        return module, attribute
    return None, None


class Preloader:
    """Imports in this process the modules pickles name, once per name, never raising."""

    def __init__(self) -> None:
        self.tried: set[str] = set()

    def preload(self, data: bytes) -> list[str]:
        """Import the modules ``data`` names that are not imported yet; the names imported.

        A module that fails to import is logged at debug level and left alone: the child that
        unpickles the chunk meets the same error and reports it against its tasks, as it would
        without preloading."""
        imported = []
        for name in referenced_modules(data):
            if name in sys.modules or name in self.tried or not _importable_name(name):
                continue
            self.tried.add(name)
            try:
                importlib.import_module(name)
            except (Exception, SystemExit) as exc:
                log.debug("remotemap worker: preloading %s failed: %r", name, exc)
            else:
                imported.append(name)
        return imported


def _importable_name(name: str) -> bool:
    return name not in _SKIP and all(part.isidentifier() for part in name.split("."))
