"""The system's OpenSSH client as a fast lane for large transfers.

paramiko frames every packet in Python, in the caller's process (its SFTP writes were a third
slower than ``scp`` or more in ``benchmarks/transfer.py``); OpenSSH's ``ssh`` does it in C, in
processes of its own. So a large file goes through one ``ssh`` process running ``cat`` on the
host, its local end read from or written to the file by ``ssh`` itself.

It is used only when it reaches the host exactly as the paramiko connection does: the same
host name, port, user and key files, the same known_hosts files with ``StrictHostKeyChecking
yes`` and the same ``HostKeyAlias`` (host keys stay verified, by OpenSSH this time), nothing
from the user's ssh config (``-F /dev/null``), no prompt (``BatchMode``). Hosts reached by
password or through a proxy or jump host, and machines without ``ssh``, keep SFTP.

One master connection per :class:`~remotemap.ssh.connection.Connection` (``ControlMaster``)
carries every transfer, so each costs a channel, not a handshake. The master runs ``cat`` on
the host with its stdin a pipe from this process: when this process ends, however it ends,
the pipe closes, the remote ``cat`` ends and the master with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from remotemap.ssh.errors import HostKeyError, SSHError
from remotemap.ssh.quoting import quote_argv
from remotemap.ssh.transport import error

if TYPE_CHECKING:
    from remotemap.ssh.hosts import HostSpec

#: Characters that ssh's option parser would split or interpret in a path given with ``-o``.
_UNSAFE_IN_OPTION = set(" \t\"'\\%")


def unusable_reason(spec: HostSpec, password: bool) -> str | None:
    """Why OpenSSH cannot reach this host the way the paramiko connection does, or None."""
    if shutil.which("ssh") is None:
        return "no ssh program on PATH"
    if spec.proxy_command or spec.proxy_jump:
        return "the host is reached through a proxy or jump host"
    if password:
        return "the login uses a password"
    paths = [str(p) for p in (*spec.key_files, *spec.known_hosts)]
    if any(set(p) & _UNSAFE_IN_OPTION for p in paths):
        return "a key or known_hosts path holds a character ssh options cannot carry"
    if not [p for p in spec.known_hosts if p.is_file()]:
        return "no known_hosts file to verify the host key with"
    return None


class OpenSSH:
    """A master ``ssh`` connection to one host, and commands run through it."""

    def __init__(self, spec: HostSpec, allow_agent: bool, disabled: str | None = None) -> None:
        self.spec = spec
        self.allow_agent = allow_agent
        #: Why this host's transfers keep SFTP (None: they use this lane).
        self.disabled = disabled
        #: Whether a master ever logged in (a lane that never could is given up).
        self.started = False
        self._lock = threading.Lock()
        self._dir: str | None = None
        self._master: subprocess.Popen[bytes] | None = None
        self._ending: weakref.finalize[Any, Any] | None = None

    def _options(self) -> list[str]:
        spec = self.spec
        known = " ".join(str(p) for p in spec.known_hosts if p.is_file())
        argv = ["-F", "/dev/null", "-p", str(spec.port), "-l", spec.user,
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"HostKeyAlias={spec.known_hosts_name}", "-o", "CheckHostIP=no",
                "-o", f"ConnectTimeout={max(1, round(spec.connect_timeout))}",
                "-o", "IdentitiesOnly=yes", "-o", "ClearAllForwardings=yes",
                "-o", "LogLevel=ERROR"]  # fmt: skip
        if spec.keepalive > 0:  # a dead link ends a transfer instead of hanging it
            argv += ["-o", f"ServerAliveInterval={max(1, round(spec.keepalive))}"]
        if not self.allow_agent:
            argv += ["-o", "IdentityAgent=none"]
        for key in spec.key_files:
            argv += ["-i", str(key)]
        return argv

    def _socket(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "master")

    def start(self) -> None:
        """Start the master connection (once); HostKeyError or SSHError if it cannot log in."""
        with self._lock:
            if self._master is not None and self._master.poll() is None:
                return
            self._stop()
            self._dir = tempfile.mkdtemp(prefix="remotemap-ssh-")  # 0700: only we reach it
            argv = ["ssh", *self._options(), "-M", "-S", self._socket(),
                    "-o", "ControlPersist=no", "--", self.spec.hostname, "cat"]
            try:
                self._master = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
                # A connection never closed still ends its master and socket directory, when
                # collected or at the interpreter's exit.
                self._ending = weakref.finalize(self, _end, self._master, self._dir)
                self._wait_ready(self._master)
                self.started = True
            except BaseException:
                self._stop()
                raise

    def _wait_ready(self, master: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.spec.connect_timeout + 5
        while not os.path.exists(self._socket()):
            if master.poll() is not None:
                assert master.stderr is not None
                raise self._failure(master.stderr.read().decode(errors="replace"))
            if time.monotonic() > deadline:
                raise error(SSHError, self.spec, "ssh master connection not ready in time")
            time.sleep(0.01)

    def _failure(self, stderr: str) -> SSHError:
        text = stderr.strip()[-500:]
        if "host key" in text.lower() or "host identification" in text.lower():
            return error(HostKeyError, self.spec,
                         f"ssh refused the host key of {self.spec.known_hosts_name} "
                         f"(checked against {', '.join(map(str, self.spec.known_hosts))}): "
                         f"{text}")  # fmt: skip
        return error(SSHError, self.spec, f"ssh could not connect: {text or 'no message'}")

    def run(self, argv: Sequence[str], stdin: IO[bytes] | None, stdout: IO[bytes] | None) -> None:
        """Run ``argv`` (quoted) on the host through the master, its stdin and stdout these
        files (ssh reads and writes them itself). A non-zero exit raises SSHError with its
        stderr (255: the link or the login failed)."""
        self.start()
        with tempfile.TemporaryFile() as stderr:
            status = subprocess.run(
                self._client(argv), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL, stderr=stderr,
                check=False).returncode  # fmt: skip
            self._check(argv, status, stderr)

    def watch(self, argv: Sequence[str], stdin: IO[bytes], poll: Callable[[], None],
              every: float = 0.05) -> None:
        """:meth:`run` with ``poll()`` called every ``every`` seconds while ``argv`` runs. An
        exception raised by ``poll`` (a stop) or reaching this thread (Ctrl-C) ends the
        ``ssh`` process, so its channel closes (what the host already wrote stays), and goes
        on. That process has a session of its own: a Ctrl-C at the terminal reaches this
        process only, which ends it, rather than killing it under a transfer that would
        then be reported as a failed link."""
        self.start()
        with tempfile.TemporaryFile() as stderr:
            client = subprocess.Popen(self._client(argv), stdin=stdin,
                                      stdout=subprocess.DEVNULL, stderr=stderr,
                                      start_new_session=True)  # fmt: skip
            try:
                while True:
                    try:
                        status = client.wait(every)
                        break
                    except subprocess.TimeoutExpired:
                        poll()
            except BaseException:
                _end_client(client)
                raise
            self._check(argv, status, stderr)

    def _client(self, argv: Sequence[str]) -> list[str]:
        """The ``ssh`` command that runs ``argv`` on the host through the master."""
        return ["ssh", *self._options(), "-S", self._socket(), "-o", "ControlMaster=no",
                "--", self.spec.hostname, quote_argv(argv)]

    def _check(self, argv: Sequence[str], status: int, stderr: IO[bytes]) -> None:
        if status == 0:
            return
        stderr.seek(0)
        text = stderr.read().decode(errors="replace").strip()[-500:]
        if status == 255:
            raise self._failure(text)
        raise error(SSHError, self.spec, f"{argv[0]!r} exited with status {status}: {text}",
                    exit_status=status)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        ending, self._ending = self._ending, None
        self._master = None
        if ending is not None:
            ending()  # once only: a finalizer runs at most once
        elif self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None


def _end_client(client: subprocess.Popen[bytes]) -> None:
    """End a command's ``ssh`` (TERM, then KILL if it lingers) and reap it."""
    client.terminate()
    try:
        client.wait(3)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()


def _end(master: subprocess.Popen[bytes], folder: str) -> None:
    """End a master: EOF to its remote ``cat`` ends it by itself; killed if it lingers."""
    for stream in (master.stdin, master.stderr):
        if stream is not None:
            stream.close()
    try:
        master.wait(3)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()
    shutil.rmtree(folder, ignore_errors=True)
