"""``probe``: can we reach a host, log in, and run its Python? (for ``remotemap status --check``)"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

from remotemap.ssh.connection import Connection
from remotemap.ssh.errors import (
    AuthenticationFailed,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    SSHError,
)
from remotemap.ssh.hosts import HostSpec, resolve_host
from remotemap.ssh.safety import expand_remote_home

ProbeStatus = Literal[
    "ok", "unreachable", "auth-failed", "host-key-unknown", "host-key-changed", "no-python", "error"
]

# One line, no shell syntax: prints the Python version, then remotemap's (or fails on import,
# after the first line is out).
_PROBE_CODE = (
    "import sys; print(sys.version.split()[0]); "
    "import remotemap._version as v; print(v.__version__)"
)


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` found out about one host."""

    host: str
    target: str
    status: ProbeStatus
    message: str = ""
    python_version: str | None = None
    remotemap_version: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        """One line for a status table."""
        if self.ok:
            rm = self.remotemap_version or "not installed"
            text = f"ok: Python {self.python_version}, remotemap {rm}"
        else:
            text = f"{self.status}: {self.message}"
        return f"{self.host} ({self.target}): {text} [{self.elapsed:.2f} s]"


def probe(
    host: str | HostSpec,
    *,
    remote_python: str = "python3",
    timeout: float = 5.0,
    password: str | None = None,
    allow_agent: bool = True,
) -> ProbeResult:
    """Connect to ``host``, run ``remote_python`` and report; never raises for an SSH problem.

    The whole probe takes at most about ``timeout`` seconds (connect plus command).
    """
    started = time.monotonic()
    spec = resolve_host(host) if isinstance(host, str) else host
    spec = dataclasses.replace(spec, connect_timeout=min(spec.connect_timeout, timeout))

    def result(status: ProbeStatus, message: str = "", **found: str | None) -> ProbeResult:
        elapsed = time.monotonic() - started
        return ProbeResult(spec.alias, spec.target, status, message, elapsed=elapsed, **found)

    try:
        with Connection(spec, password=password, allow_agent=allow_agent) as conn:
            conn.connect()
            left = max(timeout - (time.monotonic() - started), 0.5)
            python = expand_remote_home(conn, remote_python)
            done = conn.run([python, "-c", _PROBE_CODE], timeout=left)
    except HostUnreachable as exc:
        return result("unreachable", str(exc))
    except AuthenticationFailed as exc:
        return result("auth-failed", str(exc))
    except HostKeyUnknown as exc:
        return result("host-key-unknown", str(exc))
    except HostKeyChanged as exc:
        return result("host-key-changed", str(exc))
    except SSHError as exc:
        return result("error", str(exc))

    lines = done.stdout_text.splitlines()
    if done.exit_status == 127 or not lines:
        stderr = done.stderr_text.strip()[-300:]
        return result("no-python", f"cannot run {remote_python!r}: {stderr or done.exit_status}")
    python_version = lines[0].strip()
    remotemap_version = lines[1].strip() if len(lines) > 1 and done.ok else None
    message = "" if remotemap_version else "remotemap is not installed for " + remote_python
    return result("ok", message, python_version=python_version, remotemap_version=remotemap_version)
