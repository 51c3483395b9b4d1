"""Stored runs: what a run was asked to do and every outcome so far, so it can be resumed.

A stored run is a private (0700) directory::

    RUN/run.json           format, id, key id, mode, function name, task count, state, counts
    RUN/fingerprints.json  the function's fingerprint and each task's (see remotemap.fingerprint)
    RUN/function.pkl       the function (cloudpickle, sealed)
    RUN/tasks.pkl          the argument lists (sealed)
    RUN/outcomes/N.pkl     each chunk result with the fingerprints it was computed from (sealed;
                           N in eight digits, numbered by arrival: ``record_name``)
    RUN/lock               held (flock) by the process running it: one run at a time

Outcomes are recorded the moment they arrive, so a caller killed half-way (even by SIGKILL)
leaves a run whose finished tasks are never run again. A stored result is reused only for a
task whose position and arguments' fingerprint are the ones it was computed from, by a function
with the same fingerprint.

Nothing is unpickled unless the directory and every one above it are safe from other users
(``integrity.check_private_dir``) and the file's HMAC checks out against the run's key. The key
sits in ``$XDG_STATE_HOME/remotemap/keys`` (0600, in a private directory), not in the run:
whoever could put files into a run directory (a copy from elsewhere, a directory once open to
others, another root on a shared disk) could put a key of their own beside them, but not in
this user's state directory. So a run moved to another account or machine cannot be resumed.

Runs live under ``$XDG_STATE_HOME/remotemap/runs`` (``~/.local/state/...``); a run kept
elsewhere (``run_dir=``) is linked from there so ``remotemap runs`` lists it too.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import posixpath
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotemap import integrity
from remotemap.errors import RemotemapError, TamperedFile, UnsafePath
from remotemap.execution import dumps, dumps_result, loads, loads_result
from remotemap.locks import LOCK, DirectoryLock
from remotemap.protocol import write_atomic
from remotemap.run_records import Fingerprints, Stored, collect_outcome
from remotemap.state import key_name, state_dir

log = logging.getLogger("remotemap")

#: The layout of a stored run; a run stored with another one is refused, not misread.
FORMAT = 2
#: The names in a stored run's directory (see the module's docstring), given here only.
RUN_FILE, FINGERPRINTS, OUTCOMES = "run.json", "fingerprints.json", "outcomes"
FUNCTION_FILE, TASKS_FILE = "function.pkl", "tasks.pkl"
_OWN_ENTRIES = {RUN_FILE, FINGERPRINTS, OUTCOMES, FUNCTION_FILE, TASKS_FILE, LOCK}
_RECORD_SUFFIX = ".pkl"


def record_name(number: int) -> str:
    """The file of a stored run's ``number``-th outcome record, relative to the run
    (``outcomes/00000003.pkl``).

    Not the worker protocol's ``protocol.outcome_name`` (``outcomes/000003.pkl``), though both
    live in a directory called ``outcomes``: a record is numbered by arrival over every call
    that resumed the run (not by chunk), holds a result with the fingerprints it came from, and
    is sealed with the run's key alone, not per file name. Eight digits is what FORMAT 2
    writes; another width would need a new FORMAT."""
    return posixpath.join(OUTCOMES, f"{number:08d}{_RECORD_SUFFIX}")


def record_number(path: Path) -> int | None:
    """The number of the outcome record at ``path`` (see :func:`record_name`); None for any
    other file."""
    stem = path.name.removesuffix(_RECORD_SUFFIX)
    return int(stem) if stem != path.name and stem.isdigit() else None


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


class FunctionChanged(RemotemapError, ValueError):
    """A stored run holds results of another version of the function."""


@dataclass
class RunStore:
    """A stored run, checked safe to read; :meth:`open` also locks it for one call."""

    root: Path
    key: bytes = b""
    fingerprints: Fingerprints = field(default_factory=Fingerprints)
    lock: DirectoryLock | None = None
    _next: int = 0

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, must_exist: bool) -> RunStore:
        """The run directory ``root`` (made if need be), checked and locked; ``start`` next."""
        if must_exist and not cls.exists_at(root):
            raise ValueError(f"no stored run in {root}")
        integrity.make_private_dir(str(root), fresh=not cls.exists_at(root))
        store = cls(root, lock=DirectoryLock(root, "the run directory"))
        assert store.lock is not None
        store.lock.acquire(label="remote_map")
        return store

    @classmethod
    def existing(cls, root: Path) -> RunStore:
        """A stored run to read (not locked): checked, with its key and fingerprints."""
        integrity.check_private_dir(str(root))
        store = cls(root)
        store._load_identity()
        return store

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def start(self, mode: str, function: Callable[..., Any], fingerprints: Fingerprints,
              largs: list[tuple[Any, ...]], lkwargs: list[dict[str, Any]],
              function_changed: str) -> None:
        """Under the lock: store a new run, or take up the stored one for this call."""
        if not self.exists_at(self.root):
            self._create(mode, function, fingerprints, largs, lkwargs)
            return
        self._load_identity()
        stored = self.fingerprints
        if stored.function != fingerprints.function:
            self._function_changed(fingerprints, function_changed)
        elif function_changed != "rerun":  # results of earlier versions kept on purpose
            fingerprints.accepted = list(stored.accepted)
        if stored.tasks != fingerprints.tasks:
            write_atomic(self.root / TASKS_FILE, self._sealed((largs, lkwargs)))
        if stored.function != fingerprints.function:
            write_atomic(self.root / FUNCTION_FILE, self._sealed(function))
        self.fingerprints = fingerprints
        write_atomic(self.root / FINGERPRINTS, fingerprints.to_json())
        self.update(state="running", mode=mode, n_tasks=len(largs), function=fingerprints.name)

    def _function_changed(self, new: Fingerprints, policy: str) -> None:
        """The function is not the one the stored results came from: refuse, start over or
        keep them, as ``function_changed`` says."""
        old = self.fingerprints
        if policy == "keep":
            new.accepted = sorted({*old.accepted, old.function} - {new.function})
            return
        if policy == "rerun":
            shutil.rmtree(self.root / OUTCOMES)
            (self.root / OUTCOMES).mkdir(mode=0o700)
            self._next = 0
            return
        self.fingerprints = Fingerprints(new.function, new.tasks, [], new.name)
        stale = len(self.load().stale)
        self.fingerprints = old
        if stale:
            what = (f"another version of {new.name} (the function or something it uses "
                    "changed since)" if old.name == new.name else
                    f"{old.name}, and this call's function is {new.name}")
            raise FunctionChanged(
                f"the run stored in {self.root} holds {stale} result(s) of {what}. Give "
                "function_changed='rerun' (`remotemap retry --function-changed rerun`) to run "
                "every task again, or function_changed='keep' to keep those results and run "
                "only the failed and unfinished tasks with this version")

    def _create(self, mode: str, function: Callable[..., Any], fingerprints: Fingerprints,
                largs: list[tuple[Any, ...]], lkwargs: list[dict[str, Any]]) -> None:
        strays = sorted(p.name for p in self.root.iterdir() if p.name not in _OWN_ENTRIES
                        or (p.name == OUTCOMES and any(p.iterdir())))
        if strays:
            raise ValueError(f"{self.root} is not empty ({', '.join(strays[:3])}) and holds no "
                             f"{RUN_FILE}: it is not a stored run; give a new or empty directory")
        (self.root / OUTCOMES).mkdir(exist_ok=True, mode=0o700)
        key_id = secrets.token_hex(16)
        self.key = make_key(key_id)
        self.fingerprints = fingerprints
        write_atomic(self.root / FUNCTION_FILE, self._sealed(function))
        write_atomic(self.root / TASKS_FILE, self._sealed((largs, lkwargs)))
        write_atomic(self.root / FINGERPRINTS, fingerprints.to_json())
        run_id = self._register()
        self.write_meta({"format": FORMAT, "id": run_id, "key": key_id, "mode": mode,
                         "function": fingerprints.name, "n_tasks": len(largs),
                         "created": _now(), "state": "running", "ok": 0, "failed": 0})

    def _load_identity(self) -> None:
        """The run's key and stored fingerprints; ValueError for a run this version cannot
        read."""
        meta = self.meta()
        if meta.get("format") != FORMAT:
            raise ValueError(f"the run in {self.root} was stored by an older remotemap "
                             "(another format); start a new run (another run_dir), or remove "
                             "it")
        self.key = read_key(str(meta["key"]), self.root)
        self.fingerprints = Fingerprints.from_json((self.root / FINGERPRINTS).read_bytes())
        numbers = [record_number(p) for p in (self.root / OUTCOMES).glob(f"*{_RECORD_SUFFIX}")]
        self._next = max((n for n in numbers if n is not None), default=-1) + 1

    # -- finding ---------------------------------------------------------------------------------

    @classmethod
    def find(cls, run: str | os.PathLike[str]) -> Path:
        """A stored run's directory, by id (under the state directory) or by path."""
        given = Path(run).expanduser()
        if cls.exists_at(given):
            return given.resolve()
        index = state_dir("runs")
        entry = index / str(run)
        if index.is_dir() and (entry.is_symlink() or entry.is_dir()):
            integrity.check_private_dir(str(index))
            _check_link(entry)
            if cls.exists_at(entry):
                return entry.resolve()
        raise ValueError(f"no stored run {str(run)!r} (looked for a directory with {RUN_FILE} "
                         f"there and under {index}); `remotemap runs` lists them")

    @staticmethod
    def exists_at(root: Path) -> bool:
        return (root / RUN_FILE).is_file()

    def _register(self) -> str:
        """Link a run kept outside the state directory from it, for ``remotemap runs``; the
        run's id (its directory's name, unless another run has that one)."""
        index = state_dir("runs")
        if self.root.parent == index:
            return self.root.name
        integrity.make_private_dir(str(index), fresh=False)
        run_id = self.root.name
        while (index / run_id).exists() or (index / run_id).is_symlink():
            run_id = f"{self.root.name}-{secrets.token_hex(3)}"
        (index / run_id).symlink_to(self.root)
        return run_id

    # -- contents --------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / RUN_FILE).read_text())
        return data

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_atomic(self.root / RUN_FILE, json.dumps(meta, indent=2).encode())

    def update(self, **changes: Any) -> None:
        self.write_meta({**self.meta(), **changes, "updated": _now()})

    def _sealed(self, obj: Any) -> bytes:
        return integrity.seal(self.key, dumps(obj))

    def _unsealed(self, path: Path) -> Any:
        """The object in a sealed file; TamperedFile (and nothing unpickled) if it fails."""
        return loads(integrity.unseal(self.key, path.read_bytes(), str(path)))

    def function(self) -> Callable[..., Any]:
        function: Callable[..., Any] = self._unsealed(self.root / FUNCTION_FILE)
        return function

    def tasks(self) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        largs, lkwargs = self._unsealed(self.root / TASKS_FILE)
        return largs, lkwargs

    def record(self, result: Any) -> None:
        """Keep a chunk's result with the fingerprints of the tasks it ran. A value that
        cannot be pickled becomes its task's failure, there and in ``result`` (serial mode's
        values were never pickled before); each value is loaded on its own (``outcomes``)."""
        # Stored as every version stored them, a list (in place: dumps_result may move a value
        # it cannot pickle to the failures, here as in the caller's result).
        if not isinstance(result.indices, list):
            result.indices = list(result.indices)
        indices = [*result.indices, *(f.index for f in result.failures)]
        record = {"function": self.fingerprints.function,
                  "tasks": {i: self.fingerprints.tasks[i] for i in indices},
                  "result": dumps_result(result)}
        write_atomic(self.root / record_name(self._next), self._sealed(record))
        self._next += 1

    def outcomes(self) -> Iterator[dict[str, Any]]:
        """Every stored outcome record that passes its integrity check, oldest first."""
        for path in sorted((self.root / OUTCOMES).glob(f"*{_RECORD_SUFFIX}")):
            try:
                record = self._unsealed(path)
                if isinstance(record, dict) and isinstance(record.get("result"), bytes):
                    # A value this process cannot load fails its own task (kind "pickling").
                    record["result"] = loads_result(record["result"])[1]
            except TamperedFile as exc:
                log.warning("%s; its tasks run again", exc)
                continue
            except OSError:
                continue
            if isinstance(record, dict):
                yield record

    def load(self) -> Stored:
        """Each task's latest outcome that this call may reuse: computed from the same
        arguments (fingerprint) at the same position, by the same (or accepted) function."""
        stored = Stored({}, {})
        for record in self.outcomes():
            collect_outcome(stored, record, self.fingerprints)
        return stored

    def remove(self) -> None:
        """Delete the run, its key and its link from the state directory."""
        meta = self.meta()
        shutil.rmtree(self.root, ignore_errors=True)
        key_path(str(meta.get("key"))).unlink(missing_ok=True)
        link = state_dir("runs") / str(meta.get("id"))
        if link.is_symlink():
            link.unlink()


def _check_link(entry: Path) -> None:
    """An index entry must be this user's own: a link another user made could point at a
    run of theirs."""
    st = entry.lstat()
    if st.st_uid != os.geteuid():
        raise UnsafePath(str(entry), integrity.unsafe_reason(
            str(entry), 0o700, st.st_uid, me=os.geteuid(), ancestor=False) or "not ours")


def key_path(key_id: str) -> Path:
    """The key file of a stored (or workflow) run, in the private keys directory of the state
    home; only the base name of ``key_id`` is used, as it is read from the run's own files."""
    return state_dir("keys") / key_name(key_id)


def make_key(key_id: str) -> bytes:
    """A new key for run ``key_id``, kept in the private keys directory."""
    integrity.make_private_dir(str(state_dir("keys")), fresh=False)
    key = integrity.new_key()
    integrity.write_key_file(str(key_path(key_id)), key)
    return key


def read_key(key_id: str, root: Path) -> bytes:
    """The key of the run stored in ``root``; UnsafePath if others could read or write it."""
    try:
        return integrity.read_key_file(str(key_path(key_id)))
    except FileNotFoundError:
        raise ValueError(f"the key of the run stored in {root} is not in {state_dir('keys')}: "
                         "the run was stored by another account or machine (or with another "
                         "XDG_STATE_HOME), or its key was removed; start a new run") from None


def list_runs() -> list[RunStore]:
    """Every stored run that can be read safely; the others are named in a warning."""
    index = state_dir("runs")
    if not index.is_dir():
        return []
    integrity.check_private_dir(str(index))
    stores = []
    for entry in sorted(index.iterdir()):
        try:
            _check_link(entry)
            if RunStore.exists_at(entry):
                stores.append(RunStore.existing(entry.resolve()))
        except (UnsafePath, ValueError, OSError) as exc:
            log.warning("skipping the stored run %s: %s", entry, exc)
    return stores
