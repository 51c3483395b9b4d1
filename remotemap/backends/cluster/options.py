"""The config section of the mode ``cluster``.

A light module (declarations only): the mode registry reads it to check a config file without
importing the cluster backend or soma-workflow; ``ClusterBackend.config_section`` is the same
object.
"""

from __future__ import annotations

from remotemap.backends.local_options import STAGING
from remotemap.backends.ssh_options import HOST_CHECKING
from remotemap.config.declarations import Key, Section

CLUSTER = Section(
    "cluster",
    "mode 'cluster': tasks as batch jobs through soma-workflow (local scheduler, SLURM, ...)",
    (
        Key("scheduler", "str", "local", "local (soma-workflow's own), slurm, pbspro or drmaa",
            choices=("local", "slurm", "pbspro", "drmaa")),
        Key("host", "str", "", "submitting host (ssh alias or [user@]host[:port]); empty = here"),
        Key("user", "str", "", "login user on the submitting host; empty = ssh config, local"),
        Key("port", "int", 0, "SSH port of the submitting host; 0 = ssh config, else 22",
            minimum=0),
        Key("key_file", "str", "", "private key for the submitting host; empty = defaults",
            is_path=True),
        *HOST_CHECKING,
        Key("connect_timeout", "float", 10.0, "seconds to connect to the submitting host",
            minimum=0.1),
        Key("queue", "str", "", "queue / partition; empty = the scheduler's default"),
        Key("walltime", "str", "", "time limit per job (minutes, H:M:S, D-H:M...); empty = "
            "the scheduler's default"),
        Key("memory", "str", "", "memory per job (e.g. 4G); empty = the scheduler's default"),
        Key("cpus_per_task", "int", 0, "CPUs per job; 0 = the scheduler's default", minimum=0),
        Key("native_options", "list[str]", [], "extra scheduler options, one per entry"),
        Key("shared_dir", "str", ".cache/remotemap/cluster",
            "where run directories go on the submitting host (seen by the compute nodes; "
            "relative = under the home)"),
        Key("python", "str", "", "the Python on the cluster; empty = this one here, else python3"),
        Key("tasks_per_job", "int", 0, "tasks per batch job; 0 = automatic", minimum=0),
        Key("dispatch", "str", "auto", "how tasks reach jobs: jobs (one job per group of "
            "tasks), workers (worker jobs pull tasks until none is left) or auto",
            choices=("auto", "jobs", "workers")),
        Key("worker_jobs", "int", 0, "worker jobs a round starts with (dispatch workers); "
            "0 = automatic (16 loops in jobs of worker_slots, at most one loop per task)",
            minimum=0),
        Key("worker_slots", "int", 0, "tasks a worker job runs at once, each in a process "
            "of its own with cpus_per_task CPUs (dispatch workers); 0 = automatic (8 when "
            "worker_jobs is automatic too, else 1)", minimum=0),
        Key("slurm_conf", "str", "", "slurm.conf on the submitting host; empty = $SLURM_CONF"),
        Key("poll_interval", "float", 1.0, "seconds between two job-state queries (sacct...)",
            minimum=0.1),
        Key("keep_files", "bool", False, "keep the run directory after the run"),
        *STAGING,
    ),
)  # fmt: skip
