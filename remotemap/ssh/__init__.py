"""remotemap's SSH layer: resolve a host like OpenSSH, connect with paramiko, run, transfer.

paramiko is imported only when a connection is made, so ``import remotemap`` never needs it.
"""

from remotemap.ssh.connection import Connection
from remotemap.ssh.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    HostUnreachable,
    RemoteCommandFailed,
    SSHError,
)
from remotemap.ssh.hosts import HostKeyPolicy, HostSpec, connection_options, resolve_host
from remotemap.ssh.known_hosts import fingerprint_sha256
from remotemap.ssh.probe import ProbeResult, probe
from remotemap.ssh.process import CompletedCommand, RemoteProcess
from remotemap.ssh.quoting import quote_argv

__all__ = [
    "AuthenticationFailed",
    "CommandTimeout",
    "CompletedCommand",
    "Connection",
    "HostKeyChanged",
    "HostKeyError",
    "HostKeyPolicy",
    "HostKeyUnknown",
    "HostSpec",
    "HostUnreachable",
    "ProbeResult",
    "RemoteCommandFailed",
    "RemoteProcess",
    "SSHError",
    "connection_options",
    "fingerprint_sha256",
    "probe",
    "quote_argv",
    "resolve_host",
]
