"""One run directory on one SSH host, and the worker server running in it.

The same on-disk protocol as ``local_with_dumps``, with SFTP between the caller and the files:
chunks are uploaded, outcomes and logs downloaded, and files that tasks wrote copied back.
The run directory is made only where no other user of the host could rename it away
(``remotemap.ssh.safety``); every file is sealed with the run's key, which reaches the worker
server on its stdin and never touches the host's disk.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from remotemap import outofband
from remotemap.backends.base import TaskOptions
from remotemap.errors import ConfigError, FailureKind, RemotemapError, TamperedFile, TaskFailure
from remotemap.execution import dumps, lost_chunk_result, tail
from remotemap.integrity import new_key
from remotemap.protocol import (
    FUNCTION,
    RunLayout,
    buffer_path,
    chunk_name,
    encode_runnable,
    exit_status_text,
    new_token,
    open_outcome,
    seal_file,
    seal_parts,
)
from remotemap.server_client import (
    ProcessReader,
    ProcessWriter,
    ServerInfo,
    WorkerServer,
    WorkerServerGone,
)
from remotemap.ssh import transfer
from remotemap.tasks import Chunk, ChunkResult
from remotemap.worker import OUTCOME_UNWRITABLE_EXIT

if TYPE_CHECKING:
    from remotemap.backends.staging import HostStaging
    from remotemap.backends.staging_targets import SSHTarget

log = logging.getLogger("remotemap")

#: Chunks and outcomes of at most this many bytes (no large buffers) go on the worker server's
#: stdin and stdout (``put``, ``tune``), sparing an SFTP transfer's round trips.
INLINE_BYTES = 1 << 18


class RemoteSetupError(RemotemapError, RuntimeError):
    """The host is reachable but cannot run remotemap's worker (no Python, no remotemap...)."""


def remote_dir(settings: Mapping[str, Any]) -> str:
    """``ssh.remote_dir``; ConfigError if, relative, it climbs out of the home with ``..``
    (checked before anything is made: such a run directory would not be removed at the end)."""
    value = str(settings.get("remote_dir") or ".cache/remotemap/runs")
    relative = value[2:] if value.startswith("~/") else value
    if not relative.startswith("/") and ".." in relative.split("/"):
        raise ConfigError(f"ssh.remote_dir: {value!r} climbs out of the remote home with "
                          "'..'; give an absolute path or one inside the home",
                          key="ssh.remote_dir")
    return value


class RemoteRun:
    """Context manager: connect, make the private run directory, start the worker server."""

    def __init__(self, host: str, settings: Mapping[str, Any], function_blob: bytes,
                 options: TaskOptions, staging: HostStaging | None = None, user: int = 0,
                 stop: Callable[[], bool] = lambda: False,
                 pending: dict[int, list[TaskFailure]] | None = None) -> None:
        self.host = host
        #: The host's staging area (``send``, ``Staged`` inputs), shared by its runners.
        self.staging = staging
        self.staging_user = user
        self.stop = stop
        self.options = options
        self.settings = settings
        self.function_blob = function_blob
        self.token = new_token()
        #: The run's secret: it seals every file of the run and never goes to the host's disk.
        self.key = new_key()
        self.connection: Any = None
        self.process: Any = None
        self.layout: RunLayout | None = None
        self.info: ServerInfo | None = None
        self._reader: ProcessReader | None = None
        self.server: WorkerServer | None = None
        #: Tasks of a staged chunk that failed to pickle or whose inputs could not be sent,
        #: reported with the chunk's result; shared by the session's runs (``pending``), so a
        #: chunk that loses its host and runs elsewhere still reports them.
        self._pending_failures = pending if pending is not None else {}
        #: Chunks uploaded and not yet started (their timeout, if any); started, not collected.
        self._staged: dict[int, float | None] = {}
        self._running: set[int] = set()
        #: The server holds the chunks beyond its slots (``tune``): every chunk is sent at once.
        self.queues = False
        self._removed = False
        self._uid = -1  # the login's uid on the host, once asked
        self._python = ""  # ssh.python, as the host resolved it

    def __enter__(self) -> RemoteRun:
        from remotemap.ssh import Connection, connection_options

        self.connection = Connection(self.host, **connection_options(self.settings)).connect()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _run_root(self) -> str:
        """Where the run directory goes: what :meth:`_make_run_dir` makes, after its checks."""
        from remotemap.ssh.quoting import remote_path

        parent = posixpath.join(self.connection.normalize("."),
                                remote_path(remote_dir(self.settings)))
        return posixpath.join(posixpath.normpath(parent), f"run-{self.token}")

    def _make_run_dir(self) -> RunLayout:
        """The private run directory, made where no other user of the host could replace it."""
        from remotemap.ssh.safety import check_remote_parent, check_remote_private, remote_uid

        conn = self.connection
        uid = self._uid = self._uid if self._uid >= 0 else remote_uid(conn)
        parent = check_remote_parent(conn, remote_dir(self.settings), uid)
        layout = RunLayout(posixpath.join(parent, f"run-{self.token}"))
        try:
            conn.makedirs_private(layout.root)
        except PermissionError as exc:
            raise RemoteSetupError(
                f"{conn.spec.target}: permission denied: user {conn.spec.user} (uid {uid}) "
                f"cannot create the run directory {layout.root} ({exc.strerror}); set "
                "ssh.remote_dir to a directory that user may write") from exc
        check_remote_private(conn, layout.root, uid)
        sftp = conn.sftp()
        for sub in layout.subdirs():  # in a directory only this user may change: no path walk
            sftp.mkdir(sub, 0o700)
        return layout

    def _start(self) -> None:
        conn = self.connection
        from remotemap.ssh.safety import expand_remote_home

        python = self._python = expand_remote_home(conn, self.settings.get("python") or "python3")
        variables = self._variables()
        # Environment variables for the tasks: set on the server, so its imports see them too.
        env = [f"{name}={value}" for name, value in variables.items()]
        root = self._run_root()
        argv = [*(["env", *env] if env else []), python, "-m", "remotemap.worker", "serve", root]
        if self.settings.get("fetch"):
            argv.append("--task-dirs")
        if not self.settings.get("preload", True):
            argv.append("--no-preload")  # only then: a host's older remotemap knows no flag
        # The server's Python starts and imports (the longest step of a host's start) while
        # the run directory is checked, made and given the function: it reads nothing of the
        # directory before its key line, which goes only once all of that succeeded.
        self.process = conn.open_process(argv)
        layout = self.layout = self._make_run_dir()
        if layout.root != root:  # the checks resolved it elsewhere: never start there
            raise RemoteSetupError(f"{self.host}: run directory {root} is {layout.root}")
        transfer.put_bytes(conn, layout.function,
                           seal_file(self.key, FUNCTION, self.function_blob))
        with contextlib.suppress(Exception):  # a server that died at once says so below
            self.process.write(f"key {self.key.hex()}\n".encode())  # never on the host's disk
        self._await_server(python)

    def _variables(self) -> dict[str, str]:
        variables = dict(self.options.env)
        if self.staging is not None:  # where the tasks find what was sent
            variables.update(self.staging.open(self.target(), self.staging_user, self.stop))
        return variables

    def _serve_on(self, process: Any) -> WorkerServer:
        """The caller's side of the worker server that ``process`` runs."""
        self._reader = ProcessReader(process)
        self._reader.timeout = max(30.0, float(self.settings.get("connect_timeout") or 10))
        self.server = WorkerServer(ProcessWriter(process), self._reader, self.host,
                                   self._reader.read_exact)
        return self.server

    def _tune(self) -> None:
        """A server of this version holds the chunks beyond its slots and sends small
        outcomes with their ``done`` line; an older one is driven as before."""
        from remotemap._version import __version__

        assert self.server is not None and self.info is not None
        self.queues = self.info.remotemap_version == __version__
        if self.queues:
            self.server.tune(self.slots, INLINE_BYTES)

    def _await_server(self, python: str) -> None:
        """Wait for the server's ready line; RemoteSetupError naming the host if it died."""
        server = self._serve_on(self.process)
        try:
            self.info = server.wait_ready()
        except (WorkerServerGone, OSError) as exc:
            err = self._stderr_after_exit()
            raise RemoteSetupError(
                f"{self.host}: {python!r} cannot start remotemap's worker"
                + (f": {err.splitlines()[-1]}" if err else f" ({exc})")
                + " (install remotemap and cloudpickle for that interpreter, or set ssh.python)"
            ) from exc
        from remotemap._version import __version__

        if self.info.remotemap_version != __version__:
            log.warning("%s runs remotemap %s, this side %s", self.host,
                        self.info.remotemap_version, __version__)
        log.debug("ssh host %s ready: python %s, %d CPUs", self.host,
                  self.info.python_version, self.info.cpus)
        self._tune()

    def target(self) -> SSHTarget:
        """This connection as the place staged inputs go."""
        from remotemap.backends.staging_targets import SSHTarget

        return SSHTarget(self.connection)

    def _stderr_after_exit(self) -> str:
        """The server's stderr once it has exited (its last bytes may trail its stdout's end)."""
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)
        deadline = time.monotonic() + 1.0
        while not self.process.stderr and time.monotonic() < deadline:
            time.sleep(0.02)
        text: str = self.process.stderr.decode(errors="replace").strip()
        return text

    @property
    def slots(self) -> int:
        n_jobs = int(self.settings.get("n_jobs") or 0)
        cpus = self.info.cpus if self.info is not None else 1
        return n_jobs if n_jobs > 0 else max(1, cpus + n_jobs + 1 if n_jobs < 0 else cpus)

    def stage(self, chunk: Chunk, start: bool = True) -> ChunkResult | None:
        """Upload the chunk and start it (or only upload it, for :meth:`start` to start it
        later); tasks whose arguments cannot be pickled fail here."""
        assert self.layout is not None and self.server is not None
        sendable, not_sent = chunk, list[TaskFailure]()
        if self.staging is not None:  # inputs go first; the chunk names their copies
            sendable, not_sent = self.staging.localize(self.target(), chunk, self.stop)
            if not sendable.indices:
                return ChunkResult(chunk.id, failures=not_sent)
        outgoing: list[tuple[str, memoryview]] = []
        options: dict[str, Any] = {"outcome_buffers": True}  # and the sizes, by _pack
        runnable, data, failures = encode_runnable(
            self.token, sendable, lambda c: self._pack(c, outgoing, options), options)
        failures += not_sent
        if data is None:
            return ChunkResult(chunk.id, failures=failures)
        # The host reports on the tasks it ran; the caller's chunk must say the same (with
        # its own arguments: a chunk given back may go to another host, staged anew there).
        mine = {i: (a, k) for i, a, k in zip(chunk.indices, chunk.largs, chunk.lkwargs,
                                              strict=True)}
        chunk.indices = list(runnable.indices)
        chunk.largs = [mine[i][0] for i in runnable.indices]
        chunk.lkwargs = [mine[i][1] for i in runnable.indices]
        if failures:  # they come back with the chunk's result (see collect), once it has one
            self._pending_failures.setdefault(chunk.id, []).extend(failures)
        # Large buffers first, as raw files (the worker maps them); then the sealed chunk
        # naming them, its tag and data written one after the other.
        sealed = seal_parts(self.key, chunk_name(chunk.id), data)
        if self.queues and not outgoing and len(data) <= INLINE_BYTES:
            self.server.put(chunk.id, sealed)  # on the server's stdin: no upload's round trips
        else:
            for path, raw in outgoing:
                transfer.put_bytes(self.connection, path, raw)
            transfer.put_bytes(self.connection, self.layout.chunk(chunk.id), sealed)
        timeout = self.options.timeout
        self._staged[chunk.id] = None if timeout is None else timeout * len(chunk)
        if start:
            self.start(chunk.id)
        return None

    def start(self, chunk_id: int) -> None:
        """Tell the server to run a chunk :meth:`stage` uploaded (its timeout starts now)."""
        assert self.server is not None
        self.server.run(chunk_id, self._staged.pop(chunk_id))
        self._running.add(chunk_id)

    def _pack(self, chunk: Chunk, outgoing: list[tuple[str, memoryview]],
              options: dict[str, Any]) -> tuple[bytes, list[str]]:
        """The chunk's arguments pickled with their large buffers left out (into ``outgoing``,
        with the remote files they go to; their sizes into ``options``, which the sealed
        header carries): the ``protocol.ArgumentPacker`` of this host."""
        assert self.layout is not None
        taken: list[memoryview] = []
        data = dumps(outofband.wrap_arguments(chunk.largs, chunk.lkwargs), protocol=5,
                     buffer_callback=outofband.taker(taken))
        files = [buffer_path(self.layout.chunk(chunk.id), i) for i in range(len(taken))]
        outgoing[:] = list(zip(files, taken, strict=True))  # a second packing replaces the first
        options["buffer_sizes"] = [raw.nbytes for raw in taken]
        return data, files

    def _fetch_buffers(self, chunk_id: int) -> Callable[[list[int]], list[Any]]:
        """How ``open_outcome`` gets the chunk's outcome buffers from the host, each of the
        size its sealed outcome gives, or TamperedFile naming it."""
        assert self.layout is not None
        outcome = self.layout.outcome(chunk_id)

        def fetch(sizes: list[int]) -> list[Any]:
            found: list[Any] = []
            for i, size in enumerate(sizes):
                path = buffer_path(outcome, i)
                try:
                    data = transfer.get_mapped(self.connection, path, size)
                except FileNotFoundError:  # removed since: the sealed outcome lists it
                    raise TamperedFile(f"{self.host}:{path}") from None
                if len(data) != size:
                    raise TamperedFile(f"{self.host}:{path}")
                found.append(data)
            return found

        return fetch

    def next_done(self, timeout: float) -> tuple[int, str] | None:
        """The next finished chunk, or None if none finished within ``timeout`` seconds."""
        from remotemap.ssh import CommandTimeout

        assert self._reader is not None and self.server is not None
        self._reader.timeout = timeout
        try:
            return self.server.next_done()
        except CommandTimeout:
            return None

    def collect(self, chunk: Chunk, status: str) -> ChunkResult:
        assert self.layout is not None and self.server is not None
        self._running.discard(chunk.id)
        result: ChunkResult | None = None
        sent = self.server.outcomes.pop(chunk.id, None)  # inline: checked as the file would be
        if status == "exit:0":
            path = self.layout.outcome(chunk.id)
            try:
                result = open_outcome(self.key, chunk.id,
                                      sent if sent is not None
                                      else transfer.get_bytes(self.connection, path),
                                      self.token, f"{self.host}:{path}",
                                      self._fetch_buffers(chunk.id))
            except FileNotFoundError:
                result = None
            except TamperedFile as exc:  # never unpickled: the chunk fails, naming the file
                result = lost_chunk_result(chunk, f"left an outcome that was refused: {exc}",
                                           kind="tampered", host=self.host)
        if result is None:
            try:
                log_tail = tail(self.connection.get_bytes(self.layout.log(chunk.id)))
            except FileNotFoundError:
                log_tail = ""
            why = ("exited without writing its outcome" if status == "exit:0"
                   else exit_status_text(status))
            if status in ("exit:0", f"exit:{OUTCOME_UNWRITABLE_EXIT}"):
                why += f" (it could not write {self.layout.outcome(chunk.id)})"
            kind: FailureKind = (
                "timeout" if status == "timeout" else ("lost" if status == "exit:0" else "crash"))
            result = lost_chunk_result(chunk, why, kind=kind, host=self.host, log_tail=log_tail)
        result.failures += self._pending_failures.pop(chunk.id, [])
        return result

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the server (closing its stdin stops its children) and remove the run files:
        while it exits when no chunk runs (it writes nothing more there), else after."""
        idle = not self._running
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.close_stdin()
            if idle:
                self._remove_run_dir()
            with contextlib.suppress(Exception):
                self.process.wait(timeout=3)
            with contextlib.suppress(Exception):
                self.process.__exit__(None, None, None)  # kills it if it still runs
        if not idle or self.process is None:
            self._remove_run_dir()
        if self.connection is not None:
            self.connection.close()

    def _remove_run_dir(self) -> None:
        if self.connection is None or self.layout is None or self._removed \
                or self.settings.get("keep_remote_files"):
            return
        self._removed = True
        try:
            self.connection.remove_tree(self.layout.root)
        except Exception as err:
            log.warning("could not remove %s on %s: %s", self.layout.root, self.host, err)
