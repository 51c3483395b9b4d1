"""Process helpers of the private SLURM in tests/infra/slurm.py: the commands it needs, free
loopback ports, log tails, stopping daemons, and killing what its jobs left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

REQUIRED_COMMANDS = (
    "munged",
    "mariadb-install-db",
    "mariadbd",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sinfo",
    "scancel",
    "squeue",
)


def missing_commands() -> list[str]:
    """The executables of :data:`REQUIRED_COMMANDS` that are not on PATH (or /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return [name for name in REQUIRED_COMMANDS if shutil.which(name, path=path) is None]


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all sockets held until every port is picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def processes_with_env(name: str, value: str) -> Iterator[int]:
    """PIDs whose environment has ``name=value`` (our daemons' descendants carry SLURM_CONF)."""
    needle = f"{name}={value}".encode()
    spared = ancestors(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            yield int(entry.name)


def ancestors(pid: int) -> set[int]:
    """``pid`` and its parents up to init (never killed by :func:`_kill_stragglers`)."""
    found = set()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return found


def kill_stragglers(conf_path: str) -> None:
    """SIGKILL slurmstepd and job processes left behind by our slurmd (found by SLURM_CONF).

    Only processes started by this cluster's daemons (or by clients pointed at it) carry its
    private ``SLURM_CONF`` path, so nothing else is touched.
    """
    for pid in processes_with_env("SLURM_CONF", conf_path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
