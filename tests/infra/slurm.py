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
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.infra.owned import mark_owned, reap_stale
from tests.infra.slurm_configs import (
    DB_USER,
    PARTITION,
    Ports,
    mariadbd_command,
    munged_command,
    write_configs,
)
from tests.infra.slurm_processes import (
    REQUIRED_COMMANDS,
    free_ports,
    kill_stragglers,
    missing_commands,
    port_open,
    tail,
    terminate,
)

__all__ = [
    "REQUIRED_COMMANDS",
    "JobRecord",
    "SingleNodeSlurm",
    "SlurmStartError",
    "missing_commands",
]

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


#: Each private SLURM's state dir starts with this (a SIGKILLed owner's are reaped).
SLURM_DIR_PREFIX = "remotemap-slurm-"


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
        base = Path(self._base_dir or tempfile.gettempdir())
        reap_stale(base, SLURM_DIR_PREFIX)
        self._state_dir = Path(tempfile.mkdtemp(prefix=SLURM_DIR_PREFIX, dir=base))
        mark_owned(self._state_dir)
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
        ports = Ports(*free_ports(4))
        db_password = secrets.token_hex(12)
        self._write_munge_key()
        self._spawn("munged", munged_command(self.state_dir, self.munge_socket))
        install = self._install_mariadb()
        write_configs(root, self.munge_socket, ports, db_password, cpus=self.cpus,
                      max_time_minutes=self.max_time_minutes)
        self._wait(lambda: self.munge_socket.exists(), "munged socket")
        self._finish("mariadb-install-db", install)
        self._spawn("mariadbd", mariadbd_command(self.state_dir, ports.db))
        self._wait(lambda: port_open(ports.db), "mariadbd port")
        self._create_db_user(db_password)
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait(lambda: port_open(ports.dbd), "slurmdbd port")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait(lambda: port_open(ports.ctld), "slurmctld port")
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost"])
        self._wait(self._node_idle, "node idle in sinfo")
        self._wait(self._sacct_answers, "sacct answer")

    def _write_munge_key(self) -> None:
        key = self.state_dir / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)

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
            f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1';"
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
            text = tail(path)
            if text:
                parts.append(f"--- {path.name}\n{text}")
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
        # One line per partition the node is in.
        result = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False, timeout=10)
        return result.returncode == 0 and set(result.stdout.split()) == {"idle"}

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
                terminate(proc, self._stop_timeout)
        for proc in self._procs.values():
            terminate(proc, self._stop_timeout)
        self._procs.clear()
        kill_stragglers(str(self.conf_path))
        if not self._keep_state_dir:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        self._state_dir = None


