"""What the test servers need of this machine, and the commands that set them up.

- :func:`unavailable_reason`: whether a loopback sshd can run here (root, OpenSSH, Debian's
  Python), else why not (:class:`InfraUnavailable` carries it as a skip reason).
- :func:`run`, :func:`run_as`: a setup command, failing with :class:`CommandFailed` quoting its
  stderr.
- :func:`kill_tree`: end a server and every process under it.
- :func:`machine_lock`: one setup at a time across test processes.

Not pytest-specific: the benchmarks use it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
_LOCK_PATH = Path("/run/lock/remotemap-test-infra.lock")


class InfraUnavailable(RuntimeError):
    """This machine cannot provide the server; the message says why (for a skip reason)."""


def which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )


def unavailable_reason() -> str | None:
    """Why a loopback sshd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the real-sshd tests need root (to create the test user and run sshd)"
    missing = [t for t in ("sshd", "ssh-keygen", "useradd") if which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (run scripts/install-sshd.sh)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not installed (run scripts/install-sshd.sh)"
    return None


# -- processes ---------------------------------------------------------------------------------


class CommandFailed(subprocess.CalledProcessError):
    """A setup command failed; the message quotes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}{self.output or ''}".rstrip()


def run(argv: Sequence[str], *, timeout: float = 60, **kwargs: object) -> str:
    """Run a setup command; its stdout, or :class:`CommandFailed` quoting its stderr."""
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if done.returncode != 0:
        raise CommandFailed(done.returncode, list(argv), done.stdout, done.stderr)
    return str(done.stdout)


def run_as(uid: int, gid: int, home: Path, argv: Sequence[str], timeout: float = 120) -> str:
    """``run`` as another user, in its home, with a minimal environment."""
    name = pwd.getpwuid(uid).pw_name
    env = {"HOME": str(home), "USER": name, "LOGNAME": name, "LANG": "C.UTF-8",
           "PATH": "/usr/local/bin:/usr/bin:/bin"}  # fmt: skip
    return run(argv, timeout=timeout, user=uid, group=gid, extra_groups=[], cwd=home, env=env)


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    children = _children() if children is None else children
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_running(pid: int) -> bool:
    """Running (a zombie waiting for a parent that may never reap it counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: Sequence[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(process_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.005)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` and every process under it, leaves first: sshd's session processes outlive
    the listener, so they are found and ended by pid, each while its parent still lives to
    reap it."""
    for attempt in range(20):
        tree = _children()
        alive = [p for p in descendants(proc.pid, tree) if process_running(p)]
        if not alive:
            break
        leaves = [p for p in alive if not any(process_running(c) for c in tree.get(p, []))]
        sig = signal.SIGTERM if attempt < 10 else signal.SIGKILL
        for pid in leaves:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        wait_gone(leaves, 0.5)
    proc.terminate()
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Serialize user creation and installs across processes (parallel test runs)."""
    _LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK_PATH, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
