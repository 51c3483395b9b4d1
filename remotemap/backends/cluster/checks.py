"""What must hold on the submitting host before a cluster round can run there.

Used by the caller (``ClusterBackend.unavailable_reason``, before a run starts here) and by the
engine before it detaches, so it imports no more than the standard library and
``remotemap.errors``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Any

from remotemap.errors import RemotemapError

#: soma-workflow's scheduler type for each ``cluster.scheduler``.
SWF_TYPES = {"local": "local_basic", "slurm": "slurm", "pbspro": "pbspro", "drmaa": "drmaa"}
#: The commands each scheduler needs on the submitting host.
COMMANDS = {"slurm": ("sbatch", "sacct", "scancel", "srun"), "pbspro": ("qsub", "qstat", "qdel")}
#: Where Slurm's clients look for slurm.conf when SLURM_CONF is unset. When none exists they
#: look the configuration up in DNS SRV records ("configless"): remotemap never lets that
#: happen (it would send queries off the machine, and to whichever server answers).
DEFAULT_SLURM_CONFS = ("/etc/slurm/slurm.conf", "/etc/slurm-llnl/slurm.conf",
                       "/usr/local/etc/slurm.conf")


class EngineError(RemotemapError, RuntimeError):
    """Why the engine cannot (or could not) run the round; the message is shown to users."""


# -- checks made before anything is started ------------------------------------------------------
def slurm_conf_problem(slurm_conf: str, env: dict[str, str] | os._Environ[str]) -> str | None:
    """None when Slurm's clients will find their configuration in a file, else why not."""
    if slurm_conf:
        return None if os.path.isfile(slurm_conf) else (
            f"cluster.slurm_conf = {slurm_conf!r}: no such file on {socket.gethostname()}")
    from_env = env.get("SLURM_CONF")
    if from_env:
        return None if os.path.isfile(from_env) else (
            f"SLURM_CONF = {from_env!r}: no such file on {socket.gethostname()}")
    if any(os.path.isfile(p) for p in DEFAULT_SLURM_CONFS):
        return None
    return ("SLURM's configuration is unknown on " + socket.gethostname() + ": set "
            "cluster.slurm_conf (or SLURM_CONF) to the path of slurm.conf. Without it the "
            "SLURM commands look the configuration up in DNS, which remotemap does not allow "
            f"(looked for {', '.join(DEFAULT_SLURM_CONFS)})")


def preflight(scheduler: str, slurm_conf: str = "", *, needs_timeout: bool = False,
              check_conf: bool = True) -> str | None:
    """What is missing on this host to run ``scheduler`` jobs through soma-workflow, with how
    to install it; None when nothing is. ``check_conf``: also refuse SLURM without a known
    slurm.conf."""
    if scheduler not in SWF_TYPES:
        return f"unknown scheduler {scheduler!r}; expected one of {', '.join(SWF_TYPES)}"
    if importlib.util.find_spec("soma_workflow") is None:
        return (f"soma-workflow is not installed for {sys.executable} on "
                f"{socket.gethostname()} (install it: {shlex.quote(sys.executable)} -m pip "
                "install soma-workflow psutil)")
    if scheduler == "slurm" and check_conf:
        problem = slurm_conf_problem(slurm_conf, os.environ)
        if problem:
            return problem
    missing = [c for c in COMMANDS.get(scheduler, ()) if shutil.which(c) is None]
    if needs_timeout and shutil.which("timeout") is None:
        missing.append("timeout")
    if missing:
        hint = {"slurm": "the SLURM client tools (Debian: apt install slurm-client)",
                "pbspro": "the PBS Pro client tools"}.get(scheduler, "GNU coreutils")
        return (f"{', '.join(missing)} not found on {socket.gethostname()} (PATH="
                f"{os.environ.get('PATH', '')}): install {hint}, or run where they are "
                "(cluster.host)")
    if scheduler == "drmaa" and not os.environ.get("DRMAA_LIBRARY_PATH"):
        return ("DRMAA_LIBRARY_PATH is not set on " + socket.gethostname() +
                ": point it to the scheduler's libdrmaa.so (and pip install drmaa)")
    return None


def check_slurm_options(spec: dict[str, Any]) -> None:
    """Ask slurmctld, without submitting (``sbatch --test-only``), whether it accepts the
    job options; if not, raise with its own message and the option that caused it."""
    options: list[tuple[str, list[str]]] = []
    if spec.get("queue"):
        options.append((f"cluster.queue = {spec['queue']!r}", ["-p", spec["queue"]]))
    for key, value in zip(spec.get("native_keys") or [], spec.get("native") or [], strict=True):
        options.append((f"{key} ({value})", shlex.split(value)))
    if not options:
        return

    def refusal(args: list[str]) -> str | None:
        done = subprocess.run(["sbatch", "--test-only", *args, "--wrap", "true"],
                              capture_output=True, text=True, timeout=60, check=False)
        return None if done.returncode == 0 else (done.stderr.strip() or done.stdout.strip())

    everything = refusal([a for _, args in options for a in args])
    if everything is None:
        return
    culprits = [(name, message) for name, args in options if (message := refusal(args))]
    if not culprits:
        raise EngineError(f"sbatch refused the job options together: {everything}")
    raise EngineError("; ".join(f"{name} was refused by SLURM: {message}"
                                for name, message in culprits))
