"""One SSH connection to one host: run commands, keep a process open, move bytes by SFTP.

``Connection`` opens lazily (on first use) and closes in ``__exit__``. It is safe to share
between threads: each command gets its own channel, and the single SFTP client is serialized.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from remotemap.ssh.errors import CommandTimeout, HostUnreachable, RemoteCommandFailed, SSHError
from remotemap.ssh.hosts import HostKeyPolicy, HostSpec, PathArg, resolve_host
from remotemap.ssh.process import (
    CompletedCommand,
    RemoteProcess,
    Where,
    collect,
    read_pid,
    with_pid,
)
from remotemap.ssh.quoting import quote_argv, remote_path
from remotemap.ssh.transport import (
    Credentials,
    Deadline,
    ProxyProcess,
    error,
    open_tcp,
    start_session,
)

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("remotemap.ssh")

#: How many ProxyJump hops (including ones a jump host's own config adds) before we call it a loop.
MAX_JUMP_DEPTH = 8


class Connection:
    """An SSH connection to ``host`` (an ssh-config alias, ``[user@]host[:port]``, or a
    resolved :class:`HostSpec`). Keyword settings override the ssh config; see
    :func:`~remotemap.ssh.hosts.resolve_host`. ``password`` and ``passphrase`` stay in memory.
    """

    def __init__(
        self,
        host: str | HostSpec,
        *,
        user: str | None = None,
        port: int | None = None,
        key_file: PathArg | Sequence[PathArg] | None = None,
        known_hosts: PathArg | Sequence[PathArg] | None = None,
        ssh_config: PathArg | None = None,
        host_key_policy: HostKeyPolicy | None = None,
        connect_timeout: float | None = None,
        keepalive: float | None = None,
        proxy_command: str | None = None,
        proxy_jump: str | None = None,
        password: str | None = None,
        passphrase: str | None = None,
        allow_agent: bool = True,
        _jump_depth: int = 0,
    ) -> None:
        overrides: dict[str, Any] = {
            "user": user, "port": port, "key_file": key_file, "known_hosts": known_hosts,
            "ssh_config": ssh_config, "host_key_policy": host_key_policy,
            "connect_timeout": connect_timeout, "keepalive": keepalive,
            "proxy_command": proxy_command, "proxy_jump": proxy_jump,
        }  # fmt: skip
        if isinstance(host, HostSpec):
            given = [k for k, v in overrides.items() if v is not None]
            if given:
                raise ValueError(f"pass either a HostSpec or settings, not both (got {given})")
            self.spec = host
        else:
            self.spec = resolve_host(host, **overrides)
        self._credentials = Credentials(password, passphrase, allow_agent)
        self._jump_depth = _jump_depth
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        self._transport: paramiko.Transport | None = None
        self._proxy: ProxyProcess | None = None
        self._jump: Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.fast_lane: Any = None  # ssh.transfer's OpenSSH master, closed with the rest

    def __repr__(self) -> str:
        state = "open" if self.is_connected else "closed"
        return f"<Connection {self.spec.target} ({state})>"

    @property
    def where(self) -> Where:
        return Where(self.spec.hostname, self.spec.port, self.spec.user)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def connect(self) -> Connection:
        """Connect now if not connected (again, if the connection dropped)."""
        with self._lock:
            if self.is_connected:
                return self
            self._close_quietly()
            started = time.monotonic()
            deadline = Deadline(self.spec.connect_timeout)
            try:
                self._transport = self._open(deadline)
            except BaseException:
                self._close_quietly()
                raise
            log.debug("connected to %s in %.3f s", self.spec.target, time.monotonic() - started)
        return self

    def _open(self, deadline: Deadline) -> paramiko.Transport:
        spec = self.spec
        sock: Any
        if spec.proxy_jump:
            sock = self._tunnel_through_jump(deadline)
        elif spec.proxy_command:
            self._proxy = ProxyProcess(spec.proxy_command)
            sock = self._proxy.sock
        else:
            sock = open_tcp(spec, deadline)
        return start_session(spec, sock, deadline, self._credentials, self._proxy)

    def _tunnel_through_jump(self, deadline: Deadline) -> paramiko.Channel:
        """ProxyJump ``a,b``: connect to ``b`` through ``a`` (recursively), then open a
        ``direct-tcpip`` channel from ``b`` to our host, as ``ssh -J`` does."""
        spec = self.spec
        if self._jump_depth >= MAX_JUMP_DEPTH:
            raise error(SSHError, spec, f"more than {MAX_JUMP_DEPTH} ProxyJump hops (a loop?)")
        hops = [h.strip() for h in (spec.proxy_jump or "").split(",") if h.strip()]
        policy = spec.host_key_policy if spec.source("host_key_policy") == "argument" else None
        self._jump = Connection(
            hops[-1],
            ssh_config=spec.ssh_config,
            known_hosts=spec.known_hosts,
            host_key_policy=policy,
            connect_timeout=deadline.remaining(),
            proxy_jump=",".join(hops[:-1]) or None,
            passphrase=self._credentials.passphrase,
            allow_agent=self._credentials.allow_agent,
            _jump_depth=self._jump_depth + 1,
        )
        jump = self._jump.connect()
        try:
            return jump.transport.open_channel(
                "direct-tcpip",
                (spec.hostname, spec.port),
                ("127.0.0.1", 0),
                timeout=deadline.remaining(),
            )
        except Exception as exc:
            raise error(
                HostUnreachable,
                spec,
                f"jump host {jump.spec.target} could not connect here: {exc}",
                reason="jump host could not connect",
            ) from exc

    @property
    def transport(self) -> paramiko.Transport:
        """The authenticated paramiko transport (connecting first if needed)."""
        self.connect()
        assert self._transport is not None
        return self._transport

    def close(self) -> None:
        """Close the SFTP client, the transport and any proxy or jump connection. Idempotent;
        the connection reopens if used again."""
        with self._lock:
            self._close_quietly()

    def _close_quietly(self) -> None:
        sftp, transport, proxy, jump = self._sftp, self._transport, self._proxy, self._jump
        fast, self.fast_lane = self.fast_lane, None
        self._sftp = self._transport = self._proxy = self._jump = None
        for closer in (fast, sftp, transport, proxy, jump):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing must go on to the next resource
                    log.debug("error closing %r", closer, exc_info=True)

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------------

    def _session(self, argv: Sequence[str]) -> paramiko.Channel:
        command = quote_argv(argv)
        transport = self.transport
        try:
            channel = transport.open_session(timeout=self.spec.connect_timeout)
            channel.exec_command(command)
        except Exception as exc:
            raise error(SSHError, self.spec, f"cannot start {argv[0]!r}: {exc}") from exc
        return channel

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CompletedCommand:
        """Run ``argv`` (each element passed exactly, see :func:`quote_argv`) and collect its
        output. ``stdin`` is sent then closed (no stdin: EOF at once). After ``timeout`` seconds
        the channel is closed and :class:`CommandTimeout` raised. ``check``: raise
        :class:`RemoteCommandFailed` on a non-zero exit status."""
        argv = list(argv)
        if timeout is None:
            channel, pid, early = self._session(argv), None, b""
        else:
            # Learn the remote pid first, to kill the command (and its children) on timeout:
            # closing the channel alone leaves e.g. a `sleep` running.
            end = time.monotonic() + timeout
            channel = self._session(with_pid(argv))
            pid, early = read_pid(channel, timeout, self.where, argv)
        try:
            left = None if timeout is None else end - time.monotonic()
            status, out, err = collect(channel, stdin, left)
        finally:
            channel.close()
        if status is None:
            if pid is not None:
                with contextlib.suppress(SSHError):
                    self.send_signal(pid, "KILL")
            raise error(
                CommandTimeout,
                self.spec,
                f"{argv[0]!r} did not finish within {timeout:g} s",
                argv=argv,
                timeout=timeout,
            )
        out = early + out
        result = CompletedCommand(argv, status, out, err)
        if check and not result.ok:
            tail = result.stderr_text.strip()[-500:]
            raise error(
                RemoteCommandFailed,
                self.spec,
                f"{argv[0]!r} exited with status {status}" + (f": {tail}" if tail else ""),
                argv=argv,
                exit_status=status,
                stderr=err,
            )
        return result

    def open_process(self, argv: Sequence[str]) -> RemoteProcess:
        """Start ``argv`` on its own channel and return a handle to talk to it (its ``pid`` is
        known, so it can be signalled; leaving its ``with`` block kills it if still running)."""
        argv = list(argv)
        channel = self._session(with_pid(argv))
        try:
            pid, early = read_pid(channel, self.spec.connect_timeout, self.where, argv)
        except BaseException:
            channel.close()
            raise
        return RemoteProcess(channel, argv, self.where, pid, early, self.send_signal)

    def send_signal(self, pid: int, signal: str = "TERM") -> None:
        """Send ``signal`` (a name: TERM, KILL, INT...) to the remote process group ``pid``
        (a command started by this layer leads its own group), else to the process alone."""
        if not signal.isalnum():
            raise ValueError(f"bad signal name {signal!r}")
        script = 'kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"'
        self.run(["/bin/sh", "-c", script, "sh", signal, str(pid)])

    # -- files ---------------------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        """This connection's SFTP client (opened once, reused). Not thread-safe by itself:
        prefer the methods below, which serialize on it."""
        with self._lock:
            sftp = self._sftp
            channel = sftp.get_channel() if sftp is not None else None
            if sftp is None or channel is None or channel.closed:
                sftp = self._sftp = self.transport.open_sftp_client()
            return sftp

    def _file_error(self, exc: OSError, path: str) -> OSError:
        # OSError picks the subclass (FileNotFoundError, PermissionError...) from errno.
        where = f"{self.spec.target}:{path}"
        return OSError(exc.errno, exc.strerror or str(exc), where)

    @contextlib.contextmanager
    def _link_errors(self, what: str) -> Iterator[None]:
        """A connection that drops under an SFTP call is an :class:`SSHError` (which callers
        treat as a lost link), not paramiko's own exception or a bare EOFError."""
        import paramiko

        try:
            yield
        except (paramiko.SSHException, EOFError) as exc:
            raise error(SSHError, self.spec, f"connection lost during {what}: {exc}") from exc

    def put_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` to ``path`` atomically: a temporary file in the same directory, made
        ``mode`` before any byte is written, then renamed over ``path``."""
        target = remote_path(path)
        folder, name = posixpath.split(target)
        temp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        with self._link_errors(f"upload of {target}"), self._sftp_lock:
            sftp = self.sftp()
            try:
                with sftp.open(temp, "wb") as f:
                    f.chmod(mode)
                    f.set_pipelined(True)
                    f.write(data)
                sftp.posix_rename(temp, target)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    sftp.remove(temp)
                raise self._file_error(exc, target) from exc

    # The small SFTP calls callers need, each under the lock that keeps one SFTP request at a
    # time on the shared channel; their OSErrors (FileNotFoundError...) reach the caller as is.
    def normalize(self, path: str) -> str:
        """``path`` made absolute on the host (relative: under the login's home)."""
        with self._sftp_lock:
            return str(self.sftp().normalize(remote_path(path)))

    def listdir(self, path: str) -> list[str]:
        """The names in the remote directory ``path``."""
        with self._sftp_lock:
            return list(self.sftp().listdir(remote_path(path)))

    def remove(self, path: str) -> None:
        """Delete the remote file ``path``."""
        with self._sftp_lock:
            self.sftp().remove(remote_path(path))

    def get_bytes(self, path: str) -> bytes:
        """The content of the remote file ``path``."""
        target = remote_path(path)
        with self._link_errors(f"download of {target}"), self._sftp_lock:
            try:
                with self.sftp().open(target, "rb") as f:
                    f.prefetch()
                    return f.read()
            except OSError as exc:
                raise self._file_error(exc, target) from exc

    def makedirs_private(self, path: str) -> None:
        """Create ``path`` and missing parents with mode 0700; make an existing ``path`` 0700."""
        import stat

        target = remote_path(path)
        prefix = "/" if target.startswith("/") else ""
        with self._link_errors(f"mkdir {target}"), self._sftp_lock:
            sftp = self.sftp()
            try:
                for part in (p for p in target.split("/") if p and p != "."):
                    prefix = posixpath.join(prefix, part) if prefix else part
                    try:
                        attrs = sftp.stat(prefix)
                    except FileNotFoundError:
                        try:
                            sftp.mkdir(prefix, 0o700)
                        except OSError as refused:
                            try:  # made meanwhile by someone else?
                                attrs = sftp.stat(prefix)
                            except FileNotFoundError:
                                raise refused from None  # EACCES, not the stat's ENOENT
                        else:
                            continue
                    if not stat.S_ISDIR(attrs.st_mode or 0):
                        raise NotADirectoryError(20, "not a directory", prefix)
                sftp.chmod(target, 0o700)
            except OSError as exc:
                raise self._file_error(exc, target) from exc

    def remove_tree(self, path: str) -> None:
        """Delete ``path`` and everything under it (no error if it does not exist)."""
        target = remote_path(path)
        if target in (".", "/", "..") or target.startswith("../"):
            raise ValueError(f"refusing to remove {path!r} on {self.spec.target}")
        self.run(["rm", "-rf", "--", target], check=True)
