"""The cluster engine: ``python -m remotemap.backends.cluster_engine start RUN_DIR ROUND``.

Runs on the submitting host (this machine, or the ``cluster.host`` reached over SSH). It
checks that soma-workflow and the scheduler's commands are there, then detaches itself (double
fork, own session, output to ``RUN/rounds/ROUND.log``) and, in the background, builds the
round's soma-workflow ``Workflow``, submits it through a light-mode controller whose state
lives in ``RUN/swf/ROUND/``, and writes what soma-workflow knows of each job to
``RUN/rounds/ROUND.status.json`` until the workflow is done. The caller polls that file and
the outcome files; it never talks to the engine otherwise, so the engine outlives it: a run
survives its submitting process, and ``remotemap collect`` picks it up later.

* One engine per round, made sure of by an ``flock`` on ``RUN/rounds/ROUND.lock``: ``start``
  is idempotent (it prints ``running`` when an engine holds the lock, ``ended`` when the round
  is over).
* An engine that died (killed, host rebooted) is replaced by running ``start`` again: the new
  engine reopens the same database and adopts the workflow (see ``cluster_swf.adopt_workflow``).
* ``RUN/rounds/ROUND.cancel`` asks the engine to stop the workflow (kill running jobs, drop
  queued ones) and exit.

Before detaching it imports only the standard library and remotemap's ``errors``, ``tasks``,
``integrity`` and ``backends.base`` (through ``remotemap.backends``), so ``start`` answers fast;
soma-workflow and ``cluster_swf`` are imported after. ``tests/test_layers_worker.py`` holds it
to that list.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
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
#: Seconds between two writes of an unchanged status (the engine's heartbeat).
HEARTBEAT = 1.0
#: Seconds a cancelled workflow may take to stop before the engine gives up on it.
CANCEL_GRACE = 60.0


# -- paths inside a run directory (shared with the client side) --------------------------------
def spec_path(root: str, rnd: int) -> str:
    return os.path.join(root, "rounds", f"{rnd}.json")


def status_path(root: str, rnd: int) -> str:
    return os.path.join(root, "rounds", f"{rnd}.status.json")


def cancel_path(root: str, rnd: int) -> str:
    return os.path.join(root, "rounds", f"{rnd}.cancel")


def lock_path(root: str, rnd: int) -> str:
    return os.path.join(root, "rounds", f"{rnd}.lock")


def log_path(root: str, rnd: int) -> str:
    return os.path.join(root, "rounds", f"{rnd}.log")


def state_dir(root: str, rnd: int) -> str:
    return os.path.join(root, "swf", str(rnd))


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


# -- status file -----------------------------------------------------------------------------
def write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return data


def _cast(value: Any) -> Any:
    """soma-workflow's light-mode database gives some numbers back as text (``'9'``)."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


# -- the engine --------------------------------------------------------------------------------
class Engine:
    def __init__(self, root: str, rnd: int) -> None:
        self.root = root
        self.rnd = rnd
        spec = read_json(spec_path(root, rnd))
        if spec is None:
            raise EngineError(f"no round {rnd} in {root}")
        self.spec = spec
        self.status: dict[str, Any] = read_json(status_path(root, rnd)) or {}
        self._written = 0.0

    def save(self, **changes: Any) -> None:
        self.status.update(changes, heartbeat=time.time())
        write_json(status_path(self.root, self.rnd), self.status)
        self._written = time.monotonic()

    def run(self) -> None:
        from remotemap.backends import cluster_swf as swf

        spec = self.spec
        self.save(pid=os.getpid(), host=socket.gethostname(), state="starting", error=None)
        if spec.get("slurm_conf"):
            os.environ["SLURM_CONF"] = spec["slurm_conf"]
        problem = preflight(spec["scheduler"], spec.get("slurm_conf", ""))
        if problem:
            raise EngineError(problem)
        if self.status.get("wf_id") is None and os.path.exists(cancel_path(self.root, self.rnd)):
            self.save(state="cancelled", ended=True, jobs=[])
            return
        wfc = swf.light_controller(
            Path(state_dir(self.root, self.rnd)),
            SWF_TYPES[spec["scheduler"]], tick=float(spec.get("tick", 0.1)),
            proc_nb=int(spec.get("proc_nb") or 0),
            poll_interval=float(spec.get("poll_interval", 1.0)))
        try:
            if self.status.get("wf_id") is None:
                if spec["scheduler"] == "slurm":
                    check_slurm_options(spec)
                workflow, jobs = swf.build_workflow(spec, self.root)
                wf_id = wfc.submit_workflow(workflow, name=workflow.name,
                                            queue=spec.get("queue") or None)
                self.save(wf_id=wf_id, swf_ids=swf.job_ids(wfc, wf_id, jobs), state="running")
            else:
                swf.adopt_workflow(wfc, int(self.status["wf_id"]))
                self.save(state="running", adopted=int(self.status.get("adopted", 0)) + 1)
            self.monitor(wfc)
        finally:
            wfc.stop_engine()

    def check_still_wanted(self) -> None:
        """Stop following a round whose run directory was deleted, or whose cluster is gone
        (its slurm.conf removed): nothing could ever read or finish it."""
        if not os.path.isdir(os.path.join(self.root, "rounds")):
            raise Abandoned(f"the run directory {self.root} was removed")
        conf = self.spec.get("slurm_conf")
        if conf and not os.path.exists(conf):
            raise Abandoned(f"cluster.slurm_conf {conf} was removed")

    def monitor(self, wfc: Any) -> None:
        from soma_workflow import constants

        wf_id = int(self.status["wf_id"])
        index = {swf_id: i for i, swf_id in enumerate(self.status["swf_ids"])}
        tick = float(self.spec.get("tick", 0.1))
        cancelling: float | None = None
        checked = time.monotonic()
        while True:
            if time.monotonic() - checked > 5.0:
                checked = time.monotonic()
                self.check_still_wanted()
            if cancelling is None and os.path.exists(cancel_path(self.root, self.rnd)):
                cancelling = time.monotonic()
                threading.Thread(target=wfc.stop_workflow, args=(wf_id,), daemon=True).start()
            rows, _, wf_status, *_ = wfc.workflow_elements_status(wf_id, with_drms_id=True)
            jobs: list[dict[str, Any]] = [{} for _ in index]
            for job_id, status, _, exit_info, _, drms_id in rows:
                if job_id in index:
                    exit_status, exit_value, signal, usage = exit_info
                    jobs[index[job_id]] = {
                        "status": status, "exit_status": exit_status,
                        "exit_value": _cast(exit_value), "signal": _cast(signal),
                        "usage": usage or "", "drms": _cast(drms_id)}
            done = wf_status == constants.WORKFLOW_DONE
            given_up = cancelling is not None and time.monotonic() - cancelling > CANCEL_GRACE
            if done or given_up:
                state = "cancelled" if cancelling is not None else "done"
                self.save(jobs=jobs, state=state, ended=True)
                return
            if jobs != self.status.get("jobs") or time.monotonic() - self._written > HEARTBEAT:
                self.save(jobs=jobs, cancel_requested=cancelling is not None)
            time.sleep(tick)


class Abandoned(Exception):
    """The run directory or the scheduler's configuration is gone: nobody can use the round."""


def serve(root: str, rnd: int) -> int:
    """Run the round's engine in this process (after ``start`` detached it)."""
    os.makedirs(os.path.dirname(lock_path(root, rnd)), exist_ok=True)
    lock = os.open(lock_path(root, rnd), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another engine runs this round
    engine: Engine | None = None
    try:
        engine = Engine(root, rnd)
        if engine.status.get("ended"):
            return 0
        engine.run()
        return 0
    except Abandoned as exc:
        print(f"engine stopped: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        traceback.print_exc()
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.save(state="error", ended=True, error=str(exc) or type(exc).__name__)
        return 1
    finally:
        if engine is not None and engine.status.get("ended") and os.path.isdir(root):
            with contextlib.suppress(Exception):
                engine.save(exited=True)  # soma-workflow's threads are stopped: we are done
        os.close(lock)


def engine_running(root: str, rnd: int) -> bool:
    """Whether an engine holds the round's lock (on this host)."""
    try:
        fd = os.open(lock_path(root, rnd), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def start(root: str, rnd: int, *, foreground: bool = False) -> int:
    """Check, then detach an engine for the round (unless one runs, or the round is over)."""
    from remotemap.errors import UnsafePath
    from remotemap.integrity import check_private_dir

    try:
        check_private_dir(root)  # the round's spec says what to run: only from a safe place
    except UnsafePath as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = read_json(spec_path(root, rnd))
    if spec is None:
        print(f"error: no round {rnd} in {root}", file=sys.stderr)
        return 2
    problem = preflight(spec["scheduler"], spec.get("slurm_conf", ""),
                        needs_timeout=bool(spec.get("task_timeout") or
                                           spec.get("wrapper_walltime")))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 3
    if (read_json(status_path(root, rnd)) or {}).get("ended"):
        print("ended")
        return 0
    if engine_running(root, rnd):
        print("running")
        return 0
    if foreground:
        return serve(root, rnd)
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        print("started")
        return 0
    os.setsid()
    if os.fork():
        os._exit(0)
    log = os.open(log_path(root, rnd), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(root)
    code = 1
    try:
        code = serve(root, rnd)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) in (3, 4) and args[0] == "start" and args[2].isdigit():
        return start(os.path.abspath(args[1]), int(args[2]), foreground="--foreground" in args)
    print("usage: python -m remotemap.backends.cluster_engine start RUN_DIR ROUND "
          "[--foreground]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
