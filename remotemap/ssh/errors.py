"""The errors of remotemap's SSH layer.

Every error names the host, port and user it is about (``where``), so a message read in a log
of many hosts still tells which one failed, and carries its details as attributes so callers can
act on them without parsing text.
"""

from __future__ import annotations

from typing import Any

from remotemap.errors import RemotemapError


class SSHError(RemotemapError):
    """Base of every SSH error: something went wrong talking to ``user@host:port``."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        user: str,
        reason: str | None = None,
        **details: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        #: The short cause (``"connection refused"``, ``"timed out after 5 s"``), when known.
        self.reason = reason
        self.details: dict[str, Any] = dict(details)
        for key, value in details.items():
            setattr(self, key, value)
        super().__init__(f"{self.where}: {message}")

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the message as built and every attribute, so a pickled copy (e.g. sent back from
        # a worker process) reads and behaves the same.
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls: type[SSHError], text: str, state: dict[str, Any]) -> SSHError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.__dict__.update(state)
    return err


class HostUnreachable(SSHError):
    """No SSH session could be set up: refused, unreachable, timed out, no SSH banner."""


class AuthenticationFailed(SSHError):
    """The server refused every credential offered (``tried`` lists what was offered)."""

    tried: list[str]


class HostKeyError(SSHError):
    """The server's host key could not be trusted; nothing was run on it."""

    fingerprint: str
    key_type: str


class HostKeyUnknown(HostKeyError):
    """The host is in no known_hosts file and the policy is ``reject``."""


class HostKeyChanged(HostKeyError):
    """The host's key differs from the one recorded in a known_hosts file. Always refused."""

    expected_fingerprint: str
    known_hosts_file: str


class CommandTimeout(SSHError):
    """A remote command did not finish within its timeout; its channel was closed."""

    argv: list[str]
    timeout: float


class RemoteCommandFailed(SSHError):
    """A remote command exited non-zero where success was required (``check=True``)."""

    argv: list[str]
    exit_status: int
    stderr: bytes
