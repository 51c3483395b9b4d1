"""A finished run's removal, handed by the caller to the run's engines.

Once every task of a ``remote_map`` call has its outcome, the results are the caller's; what
is left is to remove the run directory, its key and its registry entry. That may only happen
once every round's engine has exited, and an engine exits when the scheduler's accounting
shows its jobs ended: ``sacct`` lags the jobs' real end by about half a second on SLURM, and
far more on a busy cluster. The caller need not wait for that: it writes
:data:`REQUEST` (the paths to remove besides the directory) and returns at its last outcome,
and the last engine to exit removes it all (:func:`remove_if_asked`).

The order makes the hand-over safe without a lock: an engine writes ``exited`` to its status
before it looks for the request, and the caller writes the request before it looks at the
statuses. So either some engine sees the request after every round exited, or the caller sees
every round exited and removes the run itself (``session.close_run``); both may, and removal
is idempotent. Only a run submitted from this machine is handed over, since its engines can
reach the caller's registry and key file; an engine that dies leaves the run registered, and
``remotemap collect --remove`` finishes it as for any interrupted run.

Standard library and ``layout`` only: the engine imports this after its round ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Mapping

from remotemap.backends.cluster import layout

#: The caller's request, relative to the run directory: JSON ``{"files": [path, ...]}``.
REQUEST = f"{layout.ROUNDS}/remove.json"


def request_body(files: list[str]) -> bytes:
    """The request asking the engines to remove the run directory and ``files``."""
    return json.dumps({"files": files}).encode()


def _read(path: str) -> Mapping[str, object] | None:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def round_over(status: Mapping[str, object] | None) -> bool:
    """Whether a round's status says it ended and its engine is gone (or will never run)."""
    if not status or not status.get("ended"):
        return False
    return bool(status.get("exited")) or status.get("state") in ("abandoned", "error")


def every_round_over(root: str) -> bool:
    try:
        names = os.listdir(os.path.join(root, layout.ROUNDS))
    except OSError:
        return False
    numbers = [n for n in map(layout.spec_round, names) if n is not None]
    return all(round_over(_read(os.path.join(root, layout.status_name(n)))) for n in numbers)


def remove_if_asked(root: str) -> bool:
    """Remove the run directory ``root`` and the files the request names, if the caller
    asked and every round is over; True if removed. Called by each engine after it wrote
    that it exited."""
    request = _read(os.path.join(root, REQUEST))
    if request is None or not every_round_over(root):
        return False
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return False  # not the private directory the caller made: not this engine's to remove
    shutil.rmtree(root, ignore_errors=True)
    files = request.get("files")
    for path in files if isinstance(files, list) else []:
        with contextlib.suppress(OSError):
            os.unlink(str(path))
    return True
