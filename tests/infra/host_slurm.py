"""A single-node SLURM of the isolated host's own (:class:`HostSlurm`): munged, MariaDB,
slurmdbd, slurmctld and slurmd started inside the namespaces of a process of that host
(``nsenter`` into its mount, UTS and network namespaces), so its jobs run there: as the host's
user, with the host's files and Python, never on the caller's machine. (Submitting from the
host to the caller's SLURM would run the jobs here, where that user and venv do not exist.)

- Its state is at :data:`HOST_SLURM_DIR`, on the host's own tmpfs ``/run``: no caller path,
  and gone with the host's mount namespace. The caller reaches those files through
  ``/proc/PID/root``, the host's root as the kernel shows it to root.
- Its daemons listen on the standard ports of the host's own loopback (nothing else is there).
- Accounting is on, as in tests/infra/slurm.py: remotemap's cluster mode reads job states
  with ``sacct``.
- Every daemon and job is in the host's network namespace, so when the host stops, or a later
  session cleans up after a killed one (:func:`tests.infra.netns.cleanup_stale_netns`), its
  processes are killed with the namespace's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.infra.isolated_host import IsolatedHost
from tests.infra.slurm_configs import (
    DB_USER,
    PARTITION,
    Ports,
    mariadbd_command,
    munged_command,
    slurm_conf,
    slurmdbd_conf,
)
from tests.infra.slurm_processes import tail, terminate

#: The login host's name (the ssh-only isolated host is ``rmiso-host``).
LOGIN_HOSTNAME = "rmiso-login"
#: Where the host's SLURM keeps everything, inside the host.
HOST_SLURM_DIR = Path("/run/remotemap-slurm")
#: The host's loopback is its own: the standard ports are free there.
_PORTS = Ports(db=3306, dbd=6819, ctld=6817, slurmd=6818)
#: Stopped in this order (the jobs' daemon first, the store last).
_DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")
#: Nothing of the caller's environment goes in: the daemons (and through them the jobs) see
#: only this.
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HostSlurmError(RuntimeError):
    """A daemon of the host's SLURM did not come up; the message ends with their logs."""


class HostSlurm:
    """The SLURM inside the namespaces of process ``pid`` (see the module docstring).

    ``conf_path`` and ``munge_socket`` are paths inside the host; ``files`` is the state
    directory as the caller reaches it. :meth:`run` runs a command as root inside the host
    with ``SLURM_CONF`` set.
    """

    def __init__(self, pid: int, *, cpus: int = 8, max_time_minutes: int = 10,
                 timeout: float = 60.0) -> None:  # fmt: skip
        self.enter = ["nsenter", "-t", str(pid), "--mount", "--uts", "--net", "--"]
        self.root = HOST_SLURM_DIR
        self.files = Path(f"/proc/{pid}/root") / HOST_SLURM_DIR.relative_to("/")
        self._pid, self._mounts = pid, os.readlink(f"/proc/{pid}/ns/mnt")
        self.conf_path = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.partition = PARTITION
        self.cpus, self.max_time_minutes, self.timeout = cpus, max_time_minutes, timeout
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.start_seconds = 0.0

    def env(self) -> dict[str, str]:
        return {"PATH": _PATH, "LANG": "C.UTF-8", "SLURM_CONF": str(self.conf_path)}

    def run(self, argv: Sequence[str], *, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run([*self.enter, *argv], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=check, cwd="/")  # fmt: skip

    def pids(self) -> dict[str, int]:
        """The daemons' process ids (as this machine numbers them), by name."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.poll() is None}

    def start(self) -> HostSlurm:
        began = time.monotonic()
        try:
            password = self._prepare()
            self._spawn("munged", munged_command(self.root, self.munge_socket))
            self._install_db()
            self._wait(lambda: (self.files / "munge" / "munge.socket").exists(), "munged socket")
            self._spawn("mariadbd", mariadbd_command(self.root, _PORTS.db))
            self._wait(lambda: self._port_open(_PORTS.db), "mariadbd port")
            self._create_db_user(password)
            self._spawn("slurmdbd", ["slurmdbd", "-D"])
            self._wait(lambda: self._port_open(_PORTS.dbd), "slurmdbd port")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            self._wait(lambda: self._port_open(_PORTS.ctld), "slurmctld port")
            self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost"])
            self._wait(self._node_idle, "the node idle in sinfo")
            self._wait(lambda: self.run(["sacct", "-n", "-X", "-j", "1"], check=False)
                       .returncode == 0, "an answer from sacct")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _prepare(self) -> str:
        """The state directory, the munge key and the configs; returns the database password
        (in slurmdbd.conf only, 0600, on the host's tmpfs)."""
        files = self.files
        files.mkdir(mode=0o711)
        # 0711: the host's user submits (reads slurm.conf) and its jobs read their scripts in
        # slurmd's spool; munge's socket is for everyone.
        for sub, mode in (("etc", 0o711), ("munge", 0o755), ("db", 0o700), ("log", 0o700),
                          ("ctld", 0o700), ("spool", 0o711), ("run", 0o700)):  # fmt: skip
            (files / sub).mkdir(mode=mode)
        (files / "spool" / "slurmd-localhost").mkdir(mode=0o711)
        key = files / "munge" / "munge.key"
        key.touch(mode=0o400)  # never readable by others, not even for a moment
        key.write_bytes(secrets.token_bytes(1024))
        password = secrets.token_hex(12)
        (files / "etc" / "plugstack.conf").write_text("")
        (files / "etc" / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        conf = slurm_conf(self.root, self.munge_socket, _PORTS, cpus=self.cpus,
                          max_time_minutes=self.max_time_minutes)  # fmt: skip
        (files / "etc" / "slurm.conf").write_text(conf)
        (files / "etc" / "slurm.conf").chmod(0o644)
        dbd = files / "etc" / "slurmdbd.conf"
        dbd.touch(mode=0o600)
        dbd.write_text(slurmdbd_conf(self.root, self.munge_socket, _PORTS, password))
        return password

    def _spawn(self, name: str, command: Sequence[str]) -> None:
        with (self.files / "log" / f"{name}.out").open("wb") as log:
            self._procs[name] = subprocess.Popen(
                [*self.enter, *command], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env(), cwd="/",
                start_new_session=True)  # fmt: skip

    def _install_db(self) -> None:
        done = self.run(["mariadb-install-db", "--no-defaults", "--user=root",
                         f"--datadir={self.root / 'db'}", "--skip-test-db",
                         "--skip-name-resolve", "--auth-root-authentication-method=socket"],
                        check=False, timeout=self.timeout)  # fmt: skip
        if done.returncode != 0:
            raise HostSlurmError(f"mariadb-install-db exited with {done.returncode}:\n"
                                 f"{done.stderr[-2000:]}\n{self.logs()}")  # fmt: skip

    def _create_db_user(self, password: str) -> None:
        """The bootstrap makes no grants: slurmdbd's account is made here, over the socket."""
        sql = (f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}';"
               f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1';")  # fmt: skip
        done = self.run(["mariadb", "--no-defaults", f"--socket={self.root / 'run/mariadb.sock'}",
                         "--user=root", "--execute", sql], check=False)  # fmt: skip
        if done.returncode != 0:
            raise HostSlurmError(f"creating the database user failed: {done.stderr}")

    def _port_open(self, port: int) -> bool:
        # Asked from inside: the port is on the host's loopback, not the caller's.
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
        return self.run(["bash", "-c", probe], check=False).returncode == 0

    def _node_idle(self) -> bool:
        done = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return done.returncode == 0 and set(done.stdout.split()) == {"idle"}

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise HostSlurmError(f"the host's {name} exited with {proc.returncode} "
                                         f"while waiting for {what}\n{self.logs()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise HostSlurmError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        """The tail of every daemon's log (for error messages)."""
        logs = self.files / "log"
        paths = sorted(logs.iterdir()) if logs.is_dir() else []
        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in paths if tail(p))

    def stop(self, stop_timeout: float = 5.0) -> None:
        """Cancel the jobs, stop the daemons (SIGTERM, then SIGKILL), remove the state
        directory. What a job left running dies with the host's network namespace."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.run(["scancel", f"--partition={PARTITION}"], check=False, timeout=10)
        for name in _DAEMONS:
            proc = self._procs.pop(name, None)
            if proc is not None:
                terminate(proc, stop_timeout)
        with contextlib.suppress(OSError):
            # Only while ``pid`` is still the host's process (not a later one of that number).
            if os.readlink(f"/proc/{self._pid}/ns/mnt") == self._mounts:
                shutil.rmtree(self.files, ignore_errors=True)


class IsolatedClusterHost(IsolatedHost):
    """An :class:`IsolatedHost` that is also a cluster's login host: its own single-node
    SLURM (``slurm``, a :class:`HostSlurm`) runs inside it, its user submits there over SSH,
    and the jobs run there too. ``venv`` must hold soma-workflow (``HOST_EXTRAS``)."""

    def __init__(self, venv: Path, *, hostname: str = LOGIN_HOSTNAME, cpus: int = 8) -> None:
        super().__init__(venv, hostname=hostname)
        self.cpus = cpus
        self.slurm: HostSlurm | None = None

    def start(self) -> IsolatedClusterHost:
        super().start()
        assert self.server is not None and self.server.pid is not None
        try:
            self.slurm = HostSlurm(self.server.pid, cpus=self.cpus).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.slurm is not None:
            self.slurm.stop()
            self.slurm = None
        super().stop()
