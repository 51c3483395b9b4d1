"""Where remotemap keeps its own state, how a run is named, and whether its owner still lives.

Every kind of run (stored ``run_dir`` runs, workflow runs, detached cluster runs) is indexed
under one directory, ``$XDG_STATE_HOME/remotemap`` (``~/.local/state/remotemap`` by default),
one subdirectory per kind; the runs' secret keys sit beside them in ``keys/``. Run ids sort by
the time they were made and carry a random tail, so two runs started in the same second by the
same user do not collide.

Standard library only: the worker side may import this module.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import secrets
from pathlib import Path
from typing import Literal

#: The subdirectories of the state home, one per kind of thing remotemap indexes.
StateKind = Literal["runs", "workflows", "cluster", "keys"]


def state_home() -> Path:
    """``$XDG_STATE_HOME/remotemap``, read each time so tests (and users) can redirect it."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "remotemap"


def state_dir(kind: StateKind) -> Path:
    """The directory indexing runs of ``kind`` (not created here)."""
    return state_home() / kind


def key_name(run_id: str) -> str:
    """``RUN_ID.key``: the file holding a run's secret key in a keys directory
    (``state_dir("keys")`` here, its counterpart on a remote host). Only the base name of
    ``run_id`` counts: ids are read back from files a run keeps, which must not point
    elsewhere."""
    return f"{posixpath.basename(run_id)}.key"


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx``: sortable by start time, unique by its random tail."""
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def pid_alive(pid: object) -> bool:
    """Whether a process ``pid`` exists on this machine (anyone's: a process of another user
    exists too). Anything but a positive int, as read from a damaged record, is not alive."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
