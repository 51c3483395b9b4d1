"""Where a cluster run's directory lives, and how remotemap reaches it.

A cluster run directory (``shared_dir/RUN_ID``) sits on the submitting host, on a filesystem
the compute nodes see. :class:`LocalFiles` reaches it when this machine submits;
:class:`SSHFiles` when ``cluster.host`` names another host: files cross by SFTP (many small
ones packed in one ``tar`` stream), commands run over the same SSH connection (host keys
checked, see ``remotemap.ssh``). soma-workflow's own SSH mode is never used.

Where each run is, is remembered by the registry (``registry``).

A run directory is made only where no other user could rename it away, and used only while no
other user can change it (``remotemap.integrity``; over SFTP, ``remotemap.ssh.safety``). Its
pickles are sealed with the run's key, kept on the submitting host in a private key file
outside the shared directory (``$XDG_STATE_HOME/remotemap/keys/RUN_ID.key`` here,
``~/.local/state/remotemap/keys/RUN_ID.key`` on ``cluster.host``), whose path each job gets on
its command line: a batch job has no stdin to take it from, and a file in the user's own state
directory is readable by the user's jobs on every node that mounts the home, by no one else.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import posixpath
import shutil
import subprocess
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remotemap.backends.cluster.engine import engine_running
from remotemap.backends.cluster.layout import SUBDIRS
from remotemap.errors import RemotemapError
from remotemap.integrity import check_same_dir, read_key_file, write_key_file
from remotemap.pilot import make_markers, marker_source
from remotemap.rundir import LocalRunDir, prepare_parent
from remotemap.state import state_dir

log = logging.getLogger("remotemap")

#: How the engine is started on the submitting host: by the module name older installs
#: know too (``remotemap.backends.cluster_engine`` runs ``cluster.engine.main``).
ENGINE_MODULE = "remotemap.backends.cluster_engine"
#: More files than this cross SFTP in one tar stream rather than one by one.
_TAR_ABOVE = 16
#: Where run keys are kept on ``cluster.host``, under the remote home.
_REMOTE_KEYS = ".local/state/remotemap/keys"


class ClusterError(RemotemapError, RuntimeError):
    """A cluster run could not start, or went wrong as a whole (not one task's failure)."""


def check_path(what: str, path: str) -> str:
    """Refuse paths that a batch script could misread (they end up in job command lines)."""
    bad = [c for c in ('"', "$", "`", "\\", "\n", "\0") if c in path]
    if bad:
        raise ClusterError(f"{what} {path!r} contains {bad[0]!r}: choose a path without "
                           "quotes, '$', backquotes or backslashes")
    return path


class RunFiles(ABC):
    """A run directory on the submitting host; paths given to methods are relative to it."""

    #: The run directory, absolute, as the submitting host names it.
    root: str
    #: The submitting host, for messages ("localhost" for this machine).
    label: str

    @abstractmethod
    def make(self) -> None:
        """Create the (private) run directory and its subdirectories."""

    @abstractmethod
    def verify(self) -> None:
        """UnsafePath unless the existing run directory is safe from other users."""

    @abstractmethod
    def write_key(self, run_id: str, key: bytes) -> str:
        """Store the run's key in a private file of the submitting host; its path there."""

    @abstractmethod
    def read_key(self, path: str) -> bytes:
        """The key in ``path`` (UnsafePath unless only this user could read or write it)."""

    @abstractmethod
    def remove_key(self, path: str) -> None:
        """Delete the key file (no error if it is gone)."""

    @abstractmethod
    def read(self, rel: str) -> bytes | None:
        """The file's content, or None if it does not exist."""

    @abstractmethod
    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """The content of each of ``rels`` that exists."""

    @abstractmethod
    def write_many(self, files: Mapping[str, bytes]) -> None:
        """Write each file atomically (private)."""

    def write_markers(self, rnd: int, rels: list[str]) -> None:
        """Empty files ``rels``: round ``rnd``'s queue markers, only their names matter (each
        its own file here; :class:`LocalFiles` links them to one)."""
        if rels:
            self.write_many(dict.fromkeys(rels, b""))

    @abstractmethod
    def listdir(self, rel: str) -> list[str]:
        """Names in a subdirectory ([] if it does not exist)."""

    @abstractmethod
    def engine(self, python: str, rnd: int, env: Mapping[str, str]) -> str:
        """Run ``python -m ENGINE_MODULE start ROOT ROUND`` there, with
        ``env`` added to its environment; its output (``started``, ``running`` or ``ended``).
        ClusterError with the reason if not."""

    @abstractmethod
    def command(self, argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
        """Run ``argv`` on the submitting host (``env`` added): exit status, stdout, stderr."""

    @abstractmethod
    def engine_running(self, rnd: int) -> bool | None:
        """Whether the round's engine is alive; None when only its heartbeat can tell."""

    @abstractmethod
    def remove(self) -> None:
        """Delete the run directory."""

    def close(self) -> None:  # noqa: B027 - nothing to close for local files
        """Release the connection, if any."""

    def read_json(self, rel: str) -> dict[str, Any] | None:
        data = self.read(rel)
        if data is None:
            return None
        try:
            value: dict[str, Any] = json.loads(data)
        except ValueError:
            return None  # being written (non-atomic writers) or damaged: read again later
        return value


def _engine_error(label: str, python: str, code: int, out: str, err: str) -> ClusterError:
    text = (err.strip() or out.strip()).splitlines()
    last = text[-1] if text else f"exit status {code}"
    if last.startswith("error: "):
        return ClusterError(f"{label}: {last[len('error: '):]}")
    hint = ""
    if "No module named" in last:
        hint = f" (install remotemap and soma-workflow for {python} on {label})"
    elif code == 127:
        hint = f" (set cluster.python to a Python interpreter on {label})"
    return ClusterError(f"{label}: cannot start remotemap's cluster engine with {python!r}: "
                        f"{last}{hint}")


class LocalFiles(RunFiles):
    """The run directory on this machine, reached through a descriptor once made or checked."""

    def __init__(self, root: str) -> None:
        self.root = check_path("the run directory", os.path.abspath(os.path.expanduser(root)))
        self.label = "localhost"
        self._dir: LocalRunDir | None = None

    def make(self) -> None:
        prepare_parent(os.path.dirname(self.root))
        os.mkdir(self.root, 0o700)
        self._dir = LocalRunDir.enter(self.root)
        for sub in SUBDIRS:
            os.mkdir(sub, 0o700, dir_fd=self._dir.fd)

    def verify(self) -> None:
        self._rundir()

    def _rundir(self) -> LocalRunDir:
        if self._dir is None:
            self._dir = LocalRunDir.enter(self.root)
        return self._dir

    def write_key(self, run_id: str, key: bytes) -> str:
        path = str(state_dir("keys") / f"{run_id}.key")
        write_key_file(path, key)
        return path

    def read_key(self, path: str) -> bytes:
        return read_key_file(path)

    def remove_key(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def read(self, rel: str) -> bytes | None:
        return self._rundir().read(rel)

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        found = {rel: self.read(rel) for rel in rels}
        return {rel: data for rel, data in found.items() if data is not None}

    def write_many(self, files: Mapping[str, bytes]) -> None:
        rundir = self._rundir()
        for rel, data in files.items():
            rundir.write(rel, data)

    def write_markers(self, rnd: int, rels: list[str]) -> None:
        if rels:
            make_markers(self.root, rels, marker_source(rnd), dir_fd=self._rundir().fd)

    def listdir(self, rel: str) -> list[str]:
        return self._rundir().listdir(rel)

    def engine(self, python: str, rnd: int, env: Mapping[str, str]) -> str:
        if not os.path.lexists(self.root):  # removed under the run: nowhere to keep state
            raise ClusterError(f"{self.label}: the run directory {self.root} no longer exists, "
                               "so no cluster engine can run there")
        # The engine and its jobs find the run by its name: refuse one put in place of ours.
        check_same_dir(self.root, self._rundir().identity)
        command = [python, "-m", ENGINE_MODULE, "start", self.root, str(rnd)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                  check=False, stdin=subprocess.DEVNULL,
                                  env={**os.environ, **env})
        except OSError as exc:
            raise ClusterError(f"cannot run {python!r}: {exc}") from exc
        if done.returncode != 0:
            raise _engine_error(self.label, python, done.returncode, done.stdout, done.stderr)
        return done.stdout.strip()

    def command(self, argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                                  stdin=subprocess.DEVNULL, env={**os.environ, **env})
        except OSError as exc:
            return 127, "", str(exc)
        return done.returncode, done.stdout, done.stderr

    def engine_running(self, rnd: int) -> bool | None:
        return engine_running(self.root, rnd)

    def remove(self) -> None:
        if self._dir is None:
            shutil.rmtree(self.root, ignore_errors=True)
        elif not self._dir.remove():
            log.warning("%s was replaced by another directory while the run went on: left as "
                        "it is", self.root)

    def close(self) -> None:
        if self._dir is not None:
            self._dir.close()
            self._dir = None


class SSHFiles(RunFiles):
    """The run directory on ``host``, through one SSH connection (SFTP and commands)."""

    def __init__(self, host: str, settings: Mapping[str, Any], root: str) -> None:
        from remotemap.ssh import Connection, connection_options

        self.label = host
        self.connection = Connection(host, **connection_options(settings))
        self.connection.connect()
        self.root = root  # made absolute by make() / resolve()
        self._uid: int | None = None

    @property
    def uid(self) -> int:
        """The remote login's uid, which must own the run directory and the key file."""
        from remotemap.ssh.safety import remote_uid

        if self._uid is None:
            self._uid = remote_uid(self.connection)
        return self._uid

    def resolve(self) -> None:
        """Turn ``root`` (relative = under the remote home, ``~/`` allowed) into an absolute
        path (jobs and the engine need one)."""
        absolute = self.connection.normalize(self.root)
        self.root = check_path(f"the run directory on {self.label}", absolute)

    def make(self) -> None:
        from remotemap.ssh.quoting import remote_path
        from remotemap.ssh.safety import check_remote_parent, check_remote_private

        parent = check_remote_parent(self.connection, posixpath.dirname(self.root) or ".",
                                     self.uid)
        self.connection.makedirs_private(parent)
        self.connection.makedirs_private(remote_path(self.root))
        self.resolve()
        check_remote_private(self.connection, self.root, self.uid)
        self._untar({f"{sub}/": None for sub in SUBDIRS})

    def verify(self) -> None:
        from remotemap.ssh.safety import check_remote_parent, check_remote_private

        check_remote_parent(self.connection, posixpath.dirname(self.root) or ".", self.uid)
        check_remote_private(self.connection, self.root, self.uid)

    def write_key(self, run_id: str, key: bytes) -> str:
        from remotemap.ssh.safety import write_remote_key

        return write_remote_key(self.connection, self.uid, _REMOTE_KEYS, run_id, key)

    def read_key(self, path: str) -> bytes:
        from remotemap.ssh.safety import read_remote_key

        return read_remote_key(self.connection, self.uid, path)

    def remove_key(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.connection.remove(path)

    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def read(self, rel: str) -> bytes | None:
        try:
            data: bytes = self.connection.get_bytes(self._path(rel))
        except FileNotFoundError:
            return None
        return data

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        if len(rels) <= _TAR_ABOVE:
            found = {rel: self.read(rel) for rel in rels}
            return {rel: data for rel, data in found.items() if data is not None}
        result = self.connection.run(["tar", "-C", self.root, "-cf", "-", "--", *rels])
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
            for member in archive.getmembers():
                handle = archive.extractfile(member)
                if handle is not None:
                    files[member.name] = handle.read()
        return files

    def write_many(self, files: Mapping[str, bytes]) -> None:
        if len(files) <= _TAR_ABOVE:
            for rel, data in files.items():
                self.connection.put_bytes(self._path(rel), data)
        else:
            self._untar(files)

    def _untar(self, files: Mapping[str, bytes | None]) -> None:
        """Write files (``None`` content = a directory) in one ``tar -x`` over SSH."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for rel, data in files.items():
                info = tarfile.TarInfo(rel.rstrip("/"))
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o700
                    archive.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o600
                    archive.addfile(info, io.BytesIO(data))
        self.connection.run(["tar", "-C", self.root, "-xf", "-"], stdin=buffer.getvalue(),
                            check=True, timeout=600)

    def listdir(self, rel: str) -> list[str]:
        try:
            return list(self.connection.listdir(self._path(rel)))
        except FileNotFoundError:
            return []

    def engine(self, python: str, rnd: int, env: Mapping[str, str]) -> str:
        from remotemap.ssh.safety import expand_remote_home

        python = expand_remote_home(self.connection, python)  # "~/venv/..." is quoted below
        prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
        result = self.connection.run(
            [*prefix, python, "-m", ENGINE_MODULE, "start", self.root, str(rnd)], timeout=120)
        if result.exit_status != 0:
            raise _engine_error(self.label, python, result.exit_status, result.stdout_text,
                                result.stderr_text)
        return result.stdout_text.strip()

    def command(self, argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
        prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
        result = self.connection.run([*prefix, *argv], timeout=60)
        return result.exit_status, result.stdout_text, result.stderr_text

    def engine_running(self, rnd: int) -> bool | None:
        return None

    def remove(self) -> None:
        self.connection.remove_tree(self.root)

    def close(self) -> None:
        self.connection.close()


def open_files(settings: Mapping[str, Any], root: str) -> RunFiles:
    """The run directory ``root`` on the configured submitting host."""
    host = str(settings.get("host") or "")
    if not host:
        return LocalFiles(root)
    return SSHFiles(host, settings, root)
