"""One real OpenSSH server for the tests: ``sshd -D`` with its own host key, a client key, a
known_hosts file and an ssh client config naming it by an alias (:class:`SSHServer`), and the
key helpers it uses. It listens on 127.0.0.1 and a free port, or inside a network namespace
for :mod:`tests.infra.netns`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tests.infra.login_user import TestUser
from tests.infra.owned import mark_owned, reap_stale
from tests.infra.system import InfraUnavailable, kill_tree, run, unavailable_reason, which


def generate_key(path: Path, comment: str = "remotemap-test") -> Path:
    """A new passphrase-less ed25519 key pair at ``path`` and ``path.pub``; returns ``path``."""
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    run(keygen)
    return path


def fingerprint(pub_path: Path) -> str:
    """``SHA256:...`` of a public key file, as ``ssh-keygen -lf`` prints it."""
    return run(["ssh-keygen", "-lf", str(pub_path)]).split()[1]


def known_hosts_line(name: str, pub_path: Path) -> str:
    key_type, blob = pub_path.read_text().split()[:2]
    return f"{name} {key_type} {blob}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Each loopback sshd's temp dir starts with this (a SIGKILLed owner's are reaped).
SSHD_DIR_PREFIX = "remotemap-sshd-"


class SSHServer:
    """``sshd -D`` for one user, with everything in a temp dir. ``start``/``stop`` or ``with``.

    After start: ``host``, ``port``, ``user``, ``client_key`` (authorized), ``host_key_pub``,
    ``known_hosts`` (knows the host key), ``ssh_config`` (``Host {alias}`` with HostName,
    Port, User, IdentityFile, UserKnownHostsFile and maybe ProxyCommand), ``startup_seconds``.
    """

    def __init__(
        self,
        user: TestUser,
        *,
        listen: str = "127.0.0.1",
        port: int | None = None,
        alias: str = "rmtest-loopback",
        netns: str | None = None,
        hostname: str | None = None,
        proxy_command: str | None = None,
        extra_config: Sequence[str] = (),
        isolate: Callable[[Path], str] | None = None,
        seen_as: Path | None = None,
    ) -> None:
        self.user = user
        self.host = listen
        self.port = port or 0
        self.alias = alias
        self.netns = netns
        self.hostname = hostname
        self.proxy_command = proxy_command
        self.extra_config = list(extra_config)
        #: With ``netns``: shell code run (as root) in a new mount namespace before sshd, given
        #: the work dir; it makes the work dir visible to sshd at ``seen_as``.
        self.isolate = isolate
        self.seen_as = seen_as
        self.workdir = Path()
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __enter__(self) -> SSHServer:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> SSHServer:
        reason = unavailable_reason()
        if reason:
            raise InfraUnavailable(reason)
        reap_stale(Path(tempfile.gettempdir()), SSHD_DIR_PREFIX)
        self.workdir = Path(tempfile.mkdtemp(prefix=SSHD_DIR_PREFIX))
        mark_owned(self.workdir)
        try:
            # The user reads authorized_keys as itself: the dir must be world-traversable.
            self.workdir.chmod(0o755)
            self.host_key = generate_key(self.workdir / "ssh_host_ed25519_key", "host")
            self.host_key_pub = self.host_key.with_suffix(".pub")
            self.client_key = generate_key(self.workdir / "client_ed25519", "client")
            self.authorized_keys = self.workdir / "authorized_keys"
            shutil.copy(self.client_key.with_suffix(".pub"), self.authorized_keys)
            self.authorized_keys.chmod(0o644)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
            for attempt in range(5):
                port = self.port or free_port()
                if self._launch(port):
                    break
                if self.port or attempt == 4:  # a fixed port, or out of luck
                    raise RuntimeError(f"sshd did not start:\n{self.log_text()}")
            self._write_client_files()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, port: int) -> bool:
        """Start sshd on ``port``; False if it exited (e.g. port taken meanwhile)."""
        self.port = port
        self.config_path = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.log_path.write_text("")
        self.config_path.write_text(self._sshd_config())
        argv = [which("sshd") or "sshd", "-D", "-f", str(self._seen(self.config_path))]
        argv += ["-E", str(self._seen(self.log_path))]
        if self.netns:
            # Own UTS namespace too, so `hostname` there proves which host a command ran on.
            name = self.hostname or self.netns
            unshare, script = ["unshare", "--uts"], 'hostname "$0" && exec "$@"'
            if self.isolate is not None:
                unshare += ["--mount", "--propagation", "private"]
                script = self.isolate(self.workdir) + script
            set_name = [*unshare, "/bin/sh", "-c", script, name]
            argv = ["ip", "netns", "exec", self.netns, *set_name, *argv]
        started = time.monotonic()
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        while time.monotonic() - started < 10:
            if "Server listening on" in self.log_text():
                self.startup_seconds = time.monotonic() - started
                return True
            if self._proc.poll() is not None:
                self._proc = None
                return False
            time.sleep(0.005)
        raise RuntimeError(f"sshd not listening after 10 s:\n{self.log_text()}")

    def _seen(self, path: Path) -> Path:
        """``path`` (in the work dir) as sshd sees it."""
        return self.seen_as / path.relative_to(self.workdir) if self.seen_as else path

    def _sshd_config(self) -> str:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self._seen(self.host_key)}",
            f"PidFile {self._seen(self.workdir / 'sshd.pid')}",
            f"AuthorizedKeysFile {self._seen(self.authorized_keys)}",
            f"AllowUsers {self.user.name}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            "MaxStartups 100:30:200",  # tests open many connections at once
            "MaxSessions 64",
            "LogLevel VERBOSE",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _write_client_files(self) -> None:
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text(known_hosts_line(self.known_hosts_name, self.host_key_pub))
        self.ssh_config = self.workdir / "ssh_config"
        lines = [
            f"Host {self.alias}",
            f"    HostName {self.host}",
            f"    Port {self.port}",
            f"    User {self.user.name}",
            f"    IdentityFile {self.client_key}",
            f"    UserKnownHostsFile {self.known_hosts}",
        ]
        if self.proxy_command:
            lines.append(f"    ProxyCommand {self.proxy_command}")
        self.ssh_config.write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int | None:
        """sshd's listener process (with ``netns``: in the host's namespaces), while it runs."""
        return self._proc.pid if self._proc is not None else None

    def host_fingerprint(self) -> str:
        return fingerprint(self.host_key_pub)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (AttributeError, FileNotFoundError):
            return ""

    def stop(self) -> None:
        """Kill sshd and every session process under it, then remove the temp dir."""
        if self._proc is not None:
            kill_tree(self._proc)
            self._proc = None
        if self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
