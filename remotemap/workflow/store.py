"""Where a workflow run keeps its step outcomes, and the index ``remotemap status`` reads.

A workflow run directory::

    RUN/workflow.json        id, name, mode, state, times, and every step: key, state, reason
    RUN/steps/KEY.pkl        the value of each finished step (cloudpickle, sealed), atomically
    RUN/lock                 held (flock) by the process running the workflow: one at a time

The ``steps/`` files are what a resumed run trusts: a step whose file is there, passes its
seal (an HMAC with the run's key, kept in ``$XDG_STATE_HOME/remotemap/keys`` as for stored
``remote_map`` runs) and names its step's key inside is not run again; a file that fails the
seal is never unpickled (the step runs again, with a warning naming it). A run directory that
is not this user's alone is refused (``UnsafePath``). ``workflow.json`` is a report for people
and ``remotemap status``; it may lag behind the step files by a moment, never the other way
round.

Every run is listed in the index ``$XDG_STATE_HOME/remotemap/workflows/``: a run given a
``run_dir`` is linked from there; a run without one gets a directory there that holds only
its report (no values: such a run cannot be resumed, and keeps no large results around).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remotemap import integrity
from remotemap.errors import TamperedFile
from remotemap.execution import dumps, loads, this_host
from remotemap.locks import LOCK, DirectoryLock
from remotemap.locks import RunDirectoryBusy as RunDirectoryBusy  # where it was defined before
from remotemap.protocol import write_atomic
from remotemap.runs import make_key, read_key
from remotemap.state import new_run_id, state_dir

log = logging.getLogger("remotemap")

REPORT = "workflow.json"
#: How many runs without a run directory the index keeps (their reports only).
KEEP_REPORTS = 50
STEPS = "steps"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _owner() -> dict[str, Any]:
    """Which process runs the workflow: lets ``status`` tell a run killed half-way."""
    return {"pid": os.getpid(), "host": this_host()}


class WorkflowStore:
    """One workflow run's directory; ``close`` lets another process run in it."""

    def __init__(self, root: Path, keep_values: bool) -> None:
        self.root = root
        self.keep_values = keep_values
        self._lock = DirectoryLock(root, "the workflow run directory")
        #: The run's secret key: step values are sealed with it (see remotemap.integrity).
        self._key = b""

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> WorkflowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str] | None, name: str, mode: str) -> WorkflowStore:
        """The run in ``run_dir`` (made, or reopened to resume), or a report-only run."""
        if run_dir is None:
            integrity.make_private_dir(str(state_dir("workflows")), fresh=False)
            root = state_dir("workflows") / new_run_id()
            root.mkdir(mode=0o700)
            store = cls(root, keep_values=False)
            store.write_report({"id": root.name, "name": name, "mode": mode, "runs": 1,
                                "created": _now(), "state": "running", "steps": [],
                                **_owner()})
            _prune_index()
            return store
        root = Path(run_dir).expanduser().resolve()
        store = cls(root, keep_values=True)
        try:
            store._start(name, mode)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def reader(cls, root: Path) -> WorkflowStore:
        """The run in ``root`` opened to read its step values (not locked, not marked as
        running): ``remotemap runs results``, ``remotemap.load_run``. UnsafePath unless the
        directory is this user's alone; ValueError when its key is not here."""
        integrity.check_private_dir(str(root))
        store = cls(root, keep_values=True)
        report = store.read_report()
        if "key" not in report:
            raise ValueError(f"the workflow run in {root} kept no step values (it was run "
                             "without run_dir=, or by an older remotemap)")
        store._key = read_key(str(report["key"]), root)
        return store

    def _start(self, name: str, mode: str) -> None:
        """Lock the run directory (made if need be, and checked to be this user's alone)
        and mark the run as running."""
        root = self.root
        integrity.make_private_dir(str(root), fresh=not (root / REPORT).is_file())
        self._lock.acquire(label=f"workflow {name!r}")
        if (root / REPORT).is_file():
            report = self.read_report()
            if "key" not in report:
                raise ValueError(f"the workflow run in {root} was stored by an older "
                                 "remotemap; start a new run (another run_dir), or remove it")
            self._key = read_key(str(report["key"]), root)
            self.write_report({**report, "name": name, "mode": mode, "state": "running",
                               "runs": int(report.get("runs", 1)) + 1, **_owner()})
        else:
            if any(p.name != LOCK for p in root.iterdir()):
                raise ValueError(f"{root} is not empty and holds no {REPORT}: it is not a "
                                 "workflow run directory; give a new or empty directory")
            key_id = secrets.token_hex(16)
            self._key = make_key(key_id)
            self.write_report({"id": new_run_id(), "key": key_id, "name": name, "mode": mode,
                               "runs": 1, "created": _now(), "state": "running",
                               "steps": [], **_owner()})
        (root / STEPS).mkdir(exist_ok=True, mode=0o700)
        self._register()

    def _register(self) -> None:
        link = state_dir("workflows") / str(self.read_report()["id"])
        if link.is_symlink() or link.exists():
            return
        link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            link.symlink_to(self.root)
        except OSError as exc:  # the run still works; only `remotemap status` will miss it
            log.warning("could not list the workflow run in %s: %s", link.parent, exc)

    # -- the report -----------------------------------------------------------------------------

    def read_report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / REPORT).read_text())
        return data

    def write_report(self, report: Mapping[str, Any]) -> None:
        body = {**report, "updated": _now()}
        write_atomic(self.root / REPORT, json.dumps(body, indent=1).encode())

    # -- step values ----------------------------------------------------------------------------

    def _value_path(self, key: str) -> Path:
        return self.root / STEPS / f"{key}.pkl"

    def load_values(self, keys: Mapping[int, str]) -> dict[int, Any]:
        """The stored value of every step (by id) that finished in an earlier run."""
        values: dict[int, Any] = {}
        if not self.keep_values:
            return values
        for step_id, key in keys.items():
            path = self._value_path(key)
            if not path.is_file():
                continue
            try:  # the seal first: nothing is unpickled that this run did not write
                stored_key, value = loads(integrity.unseal(
                    self._key, path.read_bytes(), str(path)))
            except TamperedFile as exc:
                log.warning("workflow %s: %s; the step runs again", self.root, exc)
                continue
            except Exception as exc:  # unreadable: run the step again rather than fail
                log.warning("workflow %s: cannot load %s (%s); the step runs again",
                            self.root, path, exc)
                continue
            if stored_key == key:  # not another step's value put under this name
                values[step_id] = value
        return values

    def record_value(self, key: str, value: Any) -> bool:
        """Keep a finished step's value; False when it cannot be pickled (it will rerun)."""
        if not self.keep_values:
            return True
        try:
            data = integrity.seal(self._key, dumps((key, value)))
        except Exception as exc:
            log.warning("workflow %s: step %s's value cannot be pickled (%s); a resumed run "
                        "will run it again", self.root, key, exc)
            return False
        write_atomic(self._value_path(key), data)
        return True


def _prune_index(keep: int = KEEP_REPORTS) -> None:
    """Forget all but the latest ``keep`` report-only runs, and links to removed runs: runs
    without a ``run_dir`` would otherwise pile up for ever. Kept run directories (``run_dir``)
    are the user's and are never removed, only unlinked once gone."""
    index = state_dir("workflows")
    report_only = []
    for entry in index.iterdir():
        if entry.is_symlink():
            if not entry.exists():
                entry.unlink(missing_ok=True)
        elif entry.is_dir():
            report_only.append((entry.stat().st_mtime_ns, entry))
    report_only.sort(reverse=True)
    for _, entry in report_only[keep:]:
        shutil.rmtree(entry, ignore_errors=True)


def list_workflow_runs() -> list[tuple[Path, dict[str, Any]]]:
    """Every indexed workflow run that can still be read, most recently updated first."""
    index = state_dir("workflows")
    if not index.is_dir():
        return []
    found: list[tuple[int, Path, dict[str, Any]]] = []
    for entry in index.iterdir():
        try:
            path = entry / REPORT
            report = json.loads(path.read_text())
            written = path.stat().st_mtime_ns  # finer than the report's own times
        except (OSError, ValueError):
            continue  # a run directory removed by its owner, or half made
        if isinstance(report, dict):
            found.append((written, entry.resolve(), report))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(root, report) for _, root, report in found]
