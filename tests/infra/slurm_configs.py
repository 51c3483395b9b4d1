"""The configuration files and daemon command lines of the private SLURM in tests/infra/slurm.py
(nothing under /etc)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARTITION = "debug"
#: A partition with small limits (tests of remotemap's check against them): MaxTime 1 minute,
#: 2 CPUs and 1000 MB per node. A job that asks no memory gets 500 MB (without a default it
#: would get the node's 4000 MB, above the limit, and pend as MaxMemPerLimit).
SHORT_PARTITION = "short"
SHORT_LIMITS = {"MaxTime": "1", "MaxCPUsPerNode": "2", "MaxMemPerNode": "1000",
                "DefMemPerNode": "500"}
#: A partition that queues jobs but never starts them (State=DOWN): they pend with the reason
#: PartitionDown (tests of how a run reports why it waits).
DOWN_PARTITION = "held"
#: The node's memory as SLURM sees it (MB; memory is not a consumable resource here).
NODE_MEMORY_MB = 4000
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
    """slurm.conf: one node (``localhost``), three partitions (the default ``debug``, ``short``
    with small limits, ``held`` down), accounting through slurmdbd."""
    etc = root / "etc"
    auth_info = f"AuthInfo=socket={munge_socket}"
    short = " ".join(f"{key}={value}" for key, value in SHORT_LIMITS.items())
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
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime={max_time_minutes} \
DefaultTime={max_time_minutes} State=UP
PartitionName={SHORT_PARTITION} Nodes=localhost {short} State=UP
PartitionName={DOWN_PARTITION} Nodes=localhost MaxTime={max_time_minutes} State=DOWN
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
