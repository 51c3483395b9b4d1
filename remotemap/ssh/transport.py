"""Setting up one authenticated SSH transport: socket, handshake, host key check, login.

Every step draws on one :class:`Deadline`, so a connect attempt fails within its connect
timeout whatever goes wrong (refused, unreachable, silent server, slow login), and every
failure becomes an :mod:`remotemap.ssh.errors` error naming host, port and user.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remotemap.ssh.errors import (
    AuthenticationFailed,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    HostUnreachable,
    SSHError,
)
from remotemap.ssh.hosts import HostSpec
from remotemap.ssh.known_hosts import KnownHosts, append_known_host, fingerprint_sha256
from remotemap.ssh.lib import import_paramiko_quietly

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("remotemap.ssh")
# A library does not print: without logging configured by the application, Python would show
# paramiko's thread tracebacks (for failures we raise as our own errors anyway) on stderr.
log.addHandler(logging.NullHandler())
#: paramiko's transports log under this name, inside our hierarchy (so the handler above holds).
PARAMIKO_LOG = "remotemap.ssh.paramiko"

# paramiko names the signature algorithms of an RSA host key separately from the key type.
_KEY_TYPE_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


class Deadline:
    """A point in time that several blocking steps share."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        # Never 0: paramiko and sockets read a zero timeout as "non-blocking", not "expired".
        return max(self._end - time.monotonic(), 0.001)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._end


@dataclass(frozen=True)
class Credentials:
    """What may be offered besides the key files. Kept in memory only, never logged."""

    password: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    allow_agent: bool = True


def error(cls: type[SSHError], spec: HostSpec, message: str, **details: Any) -> SSHError:
    return cls(message, host=spec.hostname, port=spec.port, user=spec.user, **details)


def open_tcp(spec: HostSpec, deadline: Deadline) -> socket.socket:
    address = (spec.hostname, spec.port)
    try:
        sock = socket.create_connection(address, timeout=deadline.remaining())
    except socket.gaierror as exc:
        raise error(
            HostUnreachable,
            spec,
            f"cannot resolve host name: {exc.strerror}",
            reason="unknown host",
        ) from exc
    except TimeoutError as exc:
        raise error(
            HostUnreachable,
            spec,
            f"TCP connect timed out after {deadline.seconds:g} s",
            reason="timed out",
        ) from exc
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise error(HostUnreachable, spec, f"cannot connect: {reason}", reason=reason) from exc
    # Small request/answer exchanges (exec, channel open, SFTP) otherwise wait on Nagle's
    # algorithm against delayed ACKs: ~45 ms per command instead of ~3 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class ProxyProcess:
    """A ProxyCommand run by ``/bin/sh``, as OpenSSH does, talking over a socket pair."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.sock, child = socket.socketpair()
        # Kept open for the life of the proxy, to quote its complaints in an error.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", "exec " + command],
                stdin=child.fileno(),
                stdout=child.fileno(),
                stderr=self._stderr,
                start_new_session=True,  # our close() ends it, not a Ctrl-C aimed at us
            )
        except BaseException:
            self.sock.close()
            self._stderr.close()
            raise
        finally:
            child.close()

    def describe_failure(self) -> str:
        """The proxy's exit status and the tail of its stderr, for an error message."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(0.2)  # it is usually exiting right now: get its status
        status = self.process.poll()
        self._stderr.seek(0)
        tail = self._stderr.read()[-500:].decode(errors="replace").strip()
        text = f"ProxyCommand {self.command!r}"
        text += " still running" if status is None else f" exited with status {status}"
        return f"{text}: {tail}" if tail else text

    def close(self) -> None:
        self.sock.close()
        if self.process.poll() is None:
            # netcat keeps reading the network after its stdin closes: end it ourselves.
            self.process.terminate()
            try:
                self.process.wait(1.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


def start_session(
    spec: HostSpec,
    sock: socket.socket | paramiko.Channel,
    deadline: Deadline,
    credentials: Credentials,
    proxy: ProxyProcess | None = None,
) -> paramiko.Transport:
    """Handshake, verify the host key, log in. Closes the transport on any failure."""
    import_paramiko_quietly()
    import paramiko

    transport = paramiko.Transport(sock)
    transport.set_log_channel(PARAMIKO_LOG)
    try:
        known = KnownHosts.load(spec.known_hosts)
        _prefer_key_types(transport, known.key_types(spec.known_hosts_name))
        _prefer_aead_ciphers(transport)
        _handshake(transport, spec, deadline, proxy)
        _verify_host_key(transport, spec, known)
        _authenticate(transport, spec, deadline, credentials)
    except BaseException:
        transport.close()
        raise
    if spec.keepalive > 0:
        transport.set_keepalive(max(1, round(spec.keepalive)))
    return transport


def _prefer_aead_ciphers(transport: paramiko.Transport) -> None:
    """AES-GCM first where this paramiko has it: it authenticates each packet with its cipher,
    where the CTR modes add an HMAC per packet (an A/B run of benchmarks/transfer.py's SFTP
    rows: put 37 -> 51 MB/s, get 34 -> 36)."""
    options = transport.get_security_options()
    offered = list(options.ciphers)
    gcm = [c for c in offered if c.startswith("aes") and "-gcm@" in c]
    options.ciphers = [*gcm, *(c for c in offered if c not in gcm)]


def _prefer_key_types(transport: paramiko.Transport, known_types: list[str]) -> None:
    """Ask for the recorded key types first, so a host known by its RSA key shows that one."""
    options = transport.get_security_options()
    offered = list(options.key_types)
    wanted = [a for t in known_types for a in _KEY_TYPE_ALGORITHMS.get(t, (t,)) if a in offered]
    if wanted:
        options.key_types = list(dict.fromkeys(wanted + offered))


def _handshake(
    transport: paramiko.Transport, spec: HostSpec, deadline: Deadline, proxy: ProxyProcess | None
) -> None:
    transport.banner_timeout = deadline.remaining()
    done = threading.Event()
    transport.start_client(event=done)
    finished = done.wait(deadline.remaining())
    if finished and transport.is_active():
        return
    via = f" ({proxy.describe_failure()})" if proxy is not None else ""
    if not finished:
        raise error(
            HostUnreachable,
            spec,
            f"no SSH handshake within {deadline.seconds:g} s{via}",
            reason="timed out",
        )
    cause = transport.get_exception()
    text = str(cause) if cause is not None else "negotiation failed"
    if isinstance(cause, EOFError) or not text:
        text = "the connection closed before the SSH banner"
    if "banner" in text.lower() or isinstance(cause, EOFError | OSError):
        raise error(
            HostUnreachable, spec, f"no SSH server answered: {text}{via}", reason="no SSH banner"
        ) from cause
    raise error(SSHError, spec, f"SSH handshake failed: {text}{via}") from cause


def _verify_host_key(transport: paramiko.Transport, spec: HostSpec, known: KnownHosts) -> None:
    key = transport.get_remote_server_key()
    key_type, blob = key.get_name(), key.asbytes()
    name = spec.known_hosts_name
    check = known.check(name, key_type, blob)
    fingerprint = fingerprint_sha256(blob)
    facts = {"fingerprint": fingerprint, "key_type": key_type}
    if check.status == "ok":
        return
    if check.status == "revoked":
        assert check.entry is not None
        raise error(
            HostKeyError,
            spec,
            f"host key {key_type} {fingerprint} is marked @revoked in {check.entry.location}",
            **facts,
        )
    if check.status == "changed":
        assert check.entry is not None
        raise error(
            HostKeyChanged,
            spec,
            f"host key changed for {name}: the server shows {key_type} {fingerprint}, but "
            f"{check.entry.location} records {check.entry.key_type} {check.entry.fingerprint}. "
            "Refusing to connect: this may be an attack, or the host was reinstalled (then "
            f"remove that line, e.g. ssh-keygen -R '{name}' -f {check.entry.path})",
            expected_fingerprint=check.entry.fingerprint,
            known_hosts_file=str(check.entry.path),
            **facts,
        )
    if spec.host_key_policy == "accept-new" and spec.known_hosts:
        target = spec.known_hosts[0]
        append_known_host(target, name, key_type, blob)
        log.warning(
            "accepted new host key for %s: %s %s (added to %s)", name, key_type, fingerprint, target
        )
        return
    files = ", ".join(str(p) for p in spec.known_hosts) or "no known_hosts file"
    raise error(
        HostKeyUnknown,
        spec,
        f"unknown host key for {name}: {key_type} {fingerprint} is in none of {files}. "
        "Check the fingerprint, then add it (e.g. connect once with ssh) or use "
        "host_key_policy='accept-new'",
        **facts,
    )


def _load_key(path: Path, passphrase: str | None) -> tuple[paramiko.PKey | None, str]:
    """The key in ``path`` (None if unusable) and how to mention it in 'tried'."""
    import paramiko

    try:
        # Positional: the second parameter was renamed (passphrase -> password) in paramiko 5.
        return paramiko.PKey.from_path(str(path), passphrase), f"key {path}"
    except FileNotFoundError:
        return None, f"key {path} (missing)"
    except paramiko.PasswordRequiredException:
        return None, f"key {path} (encrypted, no passphrase given)"
    except (paramiko.SSHException, ValueError, OSError) as exc:
        return None, f"key {path} (unreadable: {exc})"


def _authenticate(
    transport: paramiko.Transport, spec: HostSpec, deadline: Deadline, credentials: Credentials
) -> None:
    import paramiko

    tried: list[str] = []
    keys: list[tuple[paramiko.PKey, str]] = []
    for path in spec.key_files:
        key, label = _load_key(path, credentials.passphrase)
        if key is None:
            tried.append(label)
        else:
            keys.append((key, label))
    agent = paramiko.Agent() if credentials.allow_agent else None
    try:
        if agent is not None:
            keys += [(k, f"agent key {k.fingerprint}") for k in agent.get_keys()]
        for key, label in keys:
            tried.append(label)
            if _try_auth(transport, spec, deadline, key=key):
                return
        if credentials.password is not None:
            tried.append("password")
            if _try_auth(transport, spec, deadline, password=credentials.password):
                return
    finally:
        if agent is not None:
            agent.close()
    reason = "timed out" if deadline.expired else "rejected"
    raise error(
        AuthenticationFailed,
        spec,
        f"authentication failed for user {spec.user!r} ({reason}; tried: "
        f"{', '.join(tried) or 'no key or password'})",
        reason=reason,
        tried=tried,
    )


def _try_auth(
    transport: paramiko.Transport,
    spec: HostSpec,
    deadline: Deadline,
    *,
    key: paramiko.PKey | None = None,
    password: str | None = None,
) -> bool:
    """One login attempt with a key or a password; False when refused (try the next one)."""
    import paramiko

    if deadline.expired or not transport.is_active():
        return False
    transport.auth_timeout = deadline.remaining()
    try:
        if key is not None:
            transport.auth_publickey(spec.user, key)
        elif password is not None:
            transport.auth_password(spec.user, password)
    except paramiko.AuthenticationException:  # includes BadAuthenticationType
        return False
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise error(
            HostUnreachable, spec, f"connection lost during login: {exc}", reason="connection lost"
        ) from exc
    return transport.is_authenticated()
