"""A real single-node SLURM (with accounting) whose whole state lives in a temporary directory.

Usage (needs root and the packages installed by ``scripts/install-slurm.sh``)::

    with SingleNodeSlurm() as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.client_env(), check=True)

Started daemons, all in the foreground and each in its own session: ``munged`` (own key and
socket), ``mariadbd`` (127.0.0.1, free port, socket in the state dir), ``slurmdbd``,
``slurmctld`` and ``slurmd``. Nothing is read from or written to /etc. Every SLURM client
call must carry ``SLURM_CONF`` (see :meth:`SingleNodeSlurm.client_env`): without it the
clients look the configuration up through DNS SRV records, which leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "REQUIRED_COMMANDS",
    "JobRecord",
    "SingleNodeSlurm",
    "SlurmStartError",
    "missing_commands",
]

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
PARTITION = "debug"
CLUSTER_NAME = "remotemaptest"
_DB_USER = "slurm"
_TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)


class SlurmStartError(RuntimeError):
    """A daemon did not come up; ``logs`` holds the tail of every daemon log."""

    def __init__(self, message: str, logs: str) -> None:
        super().__init__(f"{message}\n{logs}")
        self.logs = logs


@dataclass(frozen=True)
class JobRecord:
    """One job as ``sacct`` reports it (the allocation line, not the steps)."""

    job_id: str
    state: str
    exit_code: int
    signal: int

    @property
    def finished(self) -> bool:
        return self.state in _TERMINAL_STATES


def missing_commands() -> list[str]:
    """The executables of :data:`REQUIRED_COMMANDS` that are not on PATH (or /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return [name for name in REQUIRED_COMMANDS if shutil.which(name, path=path) is None]


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all sockets held until every port is picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class SingleNodeSlurm:
    """Start, use and stop a private single-node SLURM cluster (a plain context manager).

    Attributes once started: ``state_dir``, ``conf_path``, ``munge_socket``, ``partition``,
    ``cpus``, ``start_seconds`` (wall time spent in :meth:`start`).
    """

    def __init__(
        self,
        *,
        cpus: int = 16,
        max_time_minutes: int = 10,
        base_dir: str | os.PathLike[str] | None = None,
        keep_state_dir: bool = False,
        start_timeout: float = 60.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.cpus = cpus
        self.max_time_minutes = max_time_minutes
        self.partition = PARTITION
        self._base_dir = base_dir
        self._keep_state_dir = keep_state_dir
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state_dir: Path | None = None
        self.start_seconds = 0.0

    # ---------------------------------------------------------------- paths and environment
    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise RuntimeError("the SLURM cluster is not started")
        return self._state_dir

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.state_dir / "munge" / "munge.socket"

    def client_env(self) -> dict[str, str]:
        """The variables a SLURM client needs (merge into ``os.environ`` or a child's env)."""
        return {"SLURM_CONF": str(self.conf_path)}

    def env(self) -> dict[str, str]:
        """A complete environment for a child process: ``os.environ`` plus :meth:`client_env`."""
        return {**os.environ, **self.client_env()}

    # --------------------------------------------------------------------- context manager
    def __enter__(self) -> SingleNodeSlurm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ start
    def start(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("a private SLURM needs root (slurmd runs jobs as any user)")
        missing = missing_commands()
        if missing:
            raise FileNotFoundError(f"missing commands: {', '.join(missing)}")
        began = time.monotonic()
        self._state_dir = Path(tempfile.mkdtemp(prefix="remotemap-slurm-", dir=self._base_dir))
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _start_all(self) -> None:
        root = self.state_dir
        # Job processes may run as other users: they need to reach the munge socket.
        root.chmod(0o711)
        for sub in ("etc", "munge", "db", "log", "ctld", "spool", "run"):
            (root / sub).mkdir(mode=0o755 if sub == "munge" else 0o700)
        (root / "spool" / "slurmd-localhost").mkdir()
        db_port, dbd_port, ctld_port, slurmd_port = _free_ports(4)
        db_password = secrets.token_hex(12)
        self._write_munge_key()
        self._spawn("munged", self._munged_command())
        install = self._install_mariadb()
        self._write_configs(db_port, dbd_port, ctld_port, slurmd_port, db_password)
        self._wait(lambda: self.munge_socket.exists(), "munged socket")
        self._finish("mariadb-install-db", install)
        self._spawn("mariadbd", self._mariadbd_command(db_port))
        self._wait(lambda: _port_open(db_port), "mariadbd port")
        self._create_db_user(db_password)
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait(lambda: _port_open(dbd_port), "slurmdbd port")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait(lambda: _port_open(ctld_port), "slurmctld port")
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost"])
        self._wait(self._node_idle, "node idle in sinfo")
        self._wait(self._sacct_answers, "sacct answer")

    def _write_munge_key(self) -> None:
        key = self.state_dir / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)

    def _munged_command(self) -> list[str]:
        munge = self.state_dir / "munge"
        return [
            "munged",
            "--foreground",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={munge / 'munge.key'}",
            f"--log-file={self.state_dir / 'log' / 'munged.log'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}",
        ]

    def _install_mariadb(self) -> subprocess.Popen[bytes]:
        """Start ``mariadb-install-db`` (it runs while the configs are written)."""
        log = (self.state_dir / "log" / "mariadb-install-db.log").open("wb")
        with log:
            return subprocess.Popen(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    "--user=root",
                    f"--datadir={self.state_dir / 'db'}",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    "--auth-root-authentication-method=socket",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _create_db_user(self, password: str) -> None:
        """The bootstrap runs without grant tables, so the slurmdbd account is made here."""
        sql = (
            f"CREATE USER '{_DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f"GRANT ALL PRIVILEGES ON *.* TO '{_DB_USER}'@'127.0.0.1';"
        )
        result = subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.state_dir / 'run' / 'mariadb.sock'}",
                "--user=root",
                "--execute",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise SlurmStartError(f"creating the database user failed: {result.stderr}", "")

    def _mariadbd_command(self, port: int) -> list[str]:
        root = self.state_dir
        return [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={root / 'db'}",
            f"--socket={root / 'run' / 'mariadb.sock'}",
            f"--pid-file={root / 'run' / 'mariadb.pid'}",
            f"--log-error={root / 'log' / 'mariadb.log'}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-flush-log-at-trx-commit=0",
        ]

    def _write_configs(
        self, db_port: int, dbd_port: int, ctld_port: int, slurmd_port: int, db_password: str
    ) -> None:
        root = self.state_dir
        etc = root / "etc"
        auth_info = f"AuthInfo=socket={self.munge_socket}"
        (etc / "plugstack.conf").write_text("")
        slurm_conf = f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
{auth_info}
StateSaveLocation={root / "ctld"}
SlurmdSpoolDir={root / "spool" / "slurmd-%n"}
SlurmctldPidFile={root / "run" / "slurmctld.pid"}
SlurmdPidFile={root / "run" / "slurmd-%n.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={etc / "plugstack.conf"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
LaunchType=launch/slurm
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=2
MinJobAge=60
InactiveLimit=0
MessageTimeout=10
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={self.munge_socket}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime={self.max_time_minutes} \
DefaultTime={self.max_time_minutes} State=UP
"""
        (etc / "slurm.conf").write_text(slurm_conf)
        dbd_conf = etc / "slurmdbd.conf"
        dbd_conf.write_text(
            f"""\
AuthType=auth/munge
{auth_info}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
DebugLevel=info
LogFile={root / "log" / "slurmdbd.log"}
PidFile={root / "run" / "slurmdbd.pid"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser={_DB_USER}
StoragePass={db_password}
StorageLoc=slurm_acct_db
"""
        )
        dbd_conf.chmod(0o600)

    # ------------------------------------------------------------------- process helpers
    def _spawn(self, name: str, command: Sequence[str]) -> None:
        log = (self.state_dir / "log" / f"{name}.out").open("wb")
        with log:
            self._procs[name] = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                start_new_session=True,
            )

    def _finish(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        try:
            code = proc.wait(timeout=self._start_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SlurmStartError(f"{name} timed out", self.logs()) from None
        if code != 0:
            raise SlurmStartError(f"{name} exited with {code}", self.logs())

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmStartError(
                        f"{name} exited with {proc.returncode} while waiting for {what}",
                        self.logs(),
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise SlurmStartError(f"timed out waiting for {what}", self.logs())
            time.sleep(0.05)

    def logs(self) -> str:
        """The tail of every log file in the state dir (for error messages)."""
        if self._state_dir is None or not (self._state_dir / "log").is_dir():
            return ""
        parts = []
        for path in sorted((self._state_dir / "log").iterdir()):
            tail = _tail(path)
            if tail:
                parts.append(f"--- {path.name}\n{tail}")
        return "\n".join(parts)

    # ------------------------------------------------------------------------ client calls
    def run(
        self, command: Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster and capture its output."""
        return subprocess.run(
            list(command),
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def _node_idle(self) -> bool:
        result = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False, timeout=10)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _sacct_answers(self) -> bool:
        result = self.run(["sacct", "-n", "-X", "-j", "1"], check=False, timeout=10)
        return result.returncode == 0

    def sbatch(self, *args: str, script: str | None = None, cwd: Path | None = None) -> str:
        """Submit with ``sbatch --parsable``; return the job id.

        ``script`` is fed on stdin (else pass ``--wrap``). The job starts in ``cwd``, by
        default ``<state_dir>/jobs``, where its ``slurm-<id>.out`` lands unless ``-o`` is given.
        """
        workdir = cwd if cwd is not None else self.state_dir / "jobs"
        workdir.mkdir(exist_ok=True)
        result = subprocess.run(
            ["sbatch", "--parsable", *args],
            input=script,
            env=self.env(),
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> JobRecord | None:
        """The job's allocation line from ``sacct``, or None while sacct does not know it."""
        result = self.run(
            ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,ExitCode"],
            check=False,
            timeout=10,
        )
        for line in result.stdout.splitlines():
            fields = line.split("|")
            if len(fields) == 3 and fields[0] == job_id:
                code, _, sig = fields[2].partition(":")
                state = fields[1].split()[0] if fields[1] else ""
                return JobRecord(job_id, state, int(code or 0), int(sig or 0))
        return None

    def wait_job(self, job_id: str, timeout: float = 60.0, poll: float = 0.2) -> JobRecord:
        """Poll ``sacct`` until the job is in a terminal state."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if record is not None and record.finished:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s: {record}")
            time.sleep(poll)

    # ------------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Cancel the jobs, stop every daemon (SIGTERM, then SIGKILL), remove the state dir."""
        if self._state_dir is None:
            return
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.run(["scancel", f"--partition={PARTITION}"], check=False, timeout=10)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                _terminate(proc, self._stop_timeout)
        for proc in self._procs.values():
            _terminate(proc, self._stop_timeout)
        self._procs.clear()
        _kill_stragglers(str(self.conf_path))
        if not self._keep_state_dir:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        self._state_dir = None


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
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


def _processes_with_env(name: str, value: str) -> Iterator[int]:
    """PIDs whose environment has ``name=value`` (our daemons' descendants carry SLURM_CONF)."""
    needle = f"{name}={value}".encode()
    spared = _ancestors(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            yield int(entry.name)


def _ancestors(pid: int) -> set[int]:
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


def _kill_stragglers(conf_path: str) -> None:
    """SIGKILL slurmstepd and job processes left behind by our slurmd (found by SLURM_CONF).

    Only processes started by this cluster's daemons (or by clients pointed at it) carry its
    private ``SLURM_CONF`` path, so nothing else is touched.
    """
    for pid in _processes_with_env("SLURM_CONF", conf_path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
