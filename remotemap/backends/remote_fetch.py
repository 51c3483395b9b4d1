"""Files that tasks wrote in their working directory on an SSH host, copied back (``fetch``)."""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from remotemap.ssh import transfer
from remotemap.tasks import Chunk, ChunkResult

if TYPE_CHECKING:
    from remotemap.backends.remote_files import RemoteRun

log = logging.getLogger("remotemap")


def fetch_task_files(remote: RemoteRun, chunk: Chunk, result: ChunkResult,
                     settings: Mapping[str, Any]) -> None:
    """Copy the files matching ``fetch`` from each finished task's working directory to
    ``fetch_dir/INDEX/``, pulled over SFTP from this side (the host never connects back).

    A file that cannot be fetched (a name that is not UTF-8, a file gone or unreadable) is
    skipped with a warning naming it: it is not the link's failure, nor the task's."""
    assert remote.layout is not None
    patterns = list(settings.get("fetch") or [])
    dirs = [remote.layout.workdir(i) for i in result.indices]
    if not dirs:
        return
    # NUL-separated: a file name may hold a newline, or bytes that are not UTF-8.
    listing = remote.connection.run(["find", *dirs, "-maxdepth", "1", "-type", "f", "-print0"])
    local_root = os.path.expanduser(str(settings.get("fetch_dir") or "remotemap-files"))
    for raw in listing.stdout.split(b"\0"):
        folder, name = posixpath.split(raw.decode("utf-8", "surrogateescape"))
        if not raw or not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        try:
            _fetch_one(remote, folder, name, local_root)
        except (UnicodeError, FileNotFoundError, PermissionError) as exc:
            log.warning("%s: cannot fetch %r of task %s: %s", remote.host,
                        posixpath.join(folder, name), posixpath.basename(folder), exc)


def _fetch_one(remote: RemoteRun, folder: str, name: str, local_root: str) -> None:
    path = posixpath.join(folder, name)
    path.encode("utf-8")  # UnicodeEncodeError: SFTP paths are UTF-8, this name is not
    target_dir = os.path.join(local_root, posixpath.basename(folder))
    os.makedirs(target_dir, exist_ok=True)
    # Streamed to disk (large files through OpenSSH), never whole in memory.
    transfer.get_file(remote.connection, path, os.path.join(target_dir, name))
