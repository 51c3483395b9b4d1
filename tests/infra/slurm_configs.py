"""The configuration files and daemon command lines of the private SLURM in tests/infra/slurm.py
(nothing under /etc)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARTITION = "debug"
CLUSTER_NAME = "remotemaptest"
DB_USER = "slurm"


@dataclass(frozen=True)
class Ports:
    """The loopback ports of the daemons (MariaDB, slurmdbd, slurmctld, slurmd)."""

    db: int
    dbd: int
    ctld: int
    slurmd: int


def slurm_conf(root: Path, munge_socket: Path, ports: Ports, *, cpus: int,
               max_time_minutes: int) -> str:
    """slurm.conf: one node (``localhost``), one partition, accounting through slurmdbd."""
    etc = root / "etc"
    auth_info = f"AuthInfo=socket={munge_socket}"
    return f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports.ctld}
SlurmdPort={ports.slurmd}
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
AccountingStoragePort={ports.dbd}
AccountingStoragePass={munge_socket}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime={max_time_minutes} \
DefaultTime={max_time_minutes} State=UP
"""


def slurmdbd_conf(root: Path, munge_socket: Path, ports: Ports, db_password: str) -> str:
    """slurmdbd.conf: the accounting daemon, storing in the private MariaDB."""
    auth_info = f"AuthInfo=socket={munge_socket}"
    return f"""\
AuthType=auth/munge
{auth_info}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports.dbd}
SlurmUser=root
DebugLevel=info
LogFile={root / "log" / "slurmdbd.log"}
PidFile={root / "run" / "slurmdbd.pid"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports.db}
StorageUser={DB_USER}
StoragePass={db_password}
StorageLoc=slurm_acct_db
"""


def write_configs(root: Path, munge_socket: Path, ports: Ports, db_password: str, *,
                  cpus: int, max_time_minutes: int) -> None:
    """Write ``etc/slurm.conf``, ``etc/slurmdbd.conf`` (0600: it holds the database password)
    and an empty ``etc/plugstack.conf`` under the cluster's state dir ``root``."""
    etc = root / "etc"
    (etc / "plugstack.conf").write_text("")
    (etc / "slurm.conf").write_text(slurm_conf(root, munge_socket, ports, cpus=cpus,
                                               max_time_minutes=max_time_minutes))
    dbd_conf = etc / "slurmdbd.conf"
    dbd_conf.write_text(slurmdbd_conf(root, munge_socket, ports, db_password))
    dbd_conf.chmod(0o600)


def munged_command(state_dir: Path, munge_socket: Path) -> list[str]:
    """munged in the foreground, with its own key, socket and files under ``state_dir``."""
    munge = state_dir / "munge"
    return [
        "munged",
        "--foreground",
        "--force",
        f"--socket={munge_socket}",
        f"--key-file={munge / 'munge.key'}",
        f"--log-file={state_dir / 'log' / 'munged.log'}",
        f"--pid-file={munge / 'munged.pid'}",
        f"--seed-file={munge / 'munged.seed'}",
    ]


def mariadbd_command(root: Path, port: int) -> list[str]:
    """MariaDB on 127.0.0.1:``port``, its data and socket under ``root``."""
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
