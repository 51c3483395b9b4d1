"""The registry of cluster runs: where each run is, so that ``remotemap status``, ``collect``
and ``cancel`` find it from any later process (``state_dir("cluster")/RUN_ID.json``, see
``remotemap.state``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from remotemap.backends.cluster.files import ClusterError
from remotemap.protocol import write_atomic
from remotemap.state import state_dir


def registry_dir() -> Path:
    return state_dir("cluster")


def entry_path(run_id: str) -> Path:
    """The registry file of run ``run_id``."""
    return registry_dir() / f"{run_id}.json"


def register(entry: dict[str, Any]) -> None:
    registry_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(entry_path(entry["run_id"]), json.dumps(entry, indent=1).encode())


def unregister(run_id: str) -> None:
    entry_path(run_id).unlink(missing_ok=True)


def registered() -> list[dict[str, Any]]:
    entries = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return entries


def lookup(run: str) -> dict[str, Any]:
    """A registered run by id (or unique id prefix)."""
    found = [e for e in registered() if str(e.get("run_id", "")).startswith(run)]
    exact = [e for e in found if e.get("run_id") == run]
    if exact or len(found) == 1:
        return (exact or found)[0]
    if not found:
        known = ", ".join(e["run_id"] for e in registered()) or "none"
        raise ClusterError(f"no cluster run {run!r} (known runs: {known}; the registry is "
                           f"{registry_dir()})")
    raise ClusterError(f"{run!r} matches several runs: {', '.join(e['run_id'] for e in found)}")
