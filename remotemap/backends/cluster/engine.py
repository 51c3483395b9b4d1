"""The cluster engine: ``python -m remotemap.backends.cluster_engine start RUN_DIR ROUND``.

(``remotemap.backends.cluster_engine`` is a shim that runs :func:`main`: jobs, scripts and
hosts with an older install call the engine by that name.)

Runs on the submitting host (this machine, or the ``cluster.host`` reached over SSH). It
checks that soma-workflow and the scheduler's commands are there, then detaches itself (double
fork, own session, output to ``RUN/rounds/ROUND.log``) and, in the background, builds the
round's soma-workflow ``Workflow``, submits it through a light-mode controller whose state
lives in ``RUN/swf/ROUND/``, and writes what soma-workflow knows of each job to
``RUN/rounds/ROUND.status.json`` until the workflow is done (names: ``layout``). The caller
polls that file and the outcome files; it never talks to the engine otherwise, so the engine
outlives it: a run survives its submitting process, and ``remotemap collect`` picks it up
later.

* One engine per round, made sure of by an ``flock`` on ``RUN/rounds/ROUND.lock``: ``start``
  is idempotent (it prints ``running`` when an engine holds the lock, ``ended`` when the round
  is over).
* An engine that died (killed, host rebooted) is replaced by running ``start`` again: the new
  engine reopens the same database and adopts the workflow (see ``swf.adopt_workflow``).
* ``RUN/rounds/ROUND.cancel`` asks the engine to stop the workflow (kill running jobs, drop
  queued ones) and exit.

Before detaching it imports only the standard library and remotemap's ``errors``, the light
``remotemap.backends`` and this package's light ``__init__``, ``checks`` and ``layout``
(``integrity`` once ``start`` runs), so ``start`` answers fast;
soma-workflow and ``swf`` are imported after. ``tests/test_layers_worker.py`` holds it to that
list.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from remotemap.backends.cluster import layout
from remotemap.backends.cluster.checks import SWF_TYPES, EngineError, check_slurm_options, preflight
from remotemap.backends.cluster.layout import RoundPaths

#: Seconds between two writes of an unchanged status (the engine's heartbeat).
HEARTBEAT = 1.0
#: Seconds a cancelled workflow may take to stop before the engine gives up on it.
CANCEL_GRACE = 60.0


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
        self.paths = RoundPaths(root, rnd)
        spec = read_json(self.paths.spec)
        if spec is None:
            raise EngineError(f"no round {rnd} in {root}")
        self.spec = spec
        self.status: dict[str, Any] = read_json(self.paths.status) or {}
        self._written = 0.0
        self._asked = 0.0  # when squeue was last asked why jobs wait
        self._reasons: dict[str, tuple[str, str]] = {}
        #: The round's outcome files not seen yet (None once all were: the jobs are ending).
        self._awaited: set[str] | None = {layout.outcome_file(int(f)) for f, _ in spec["files"]}
        #: When this engine reached each step (time.time()): the status's ``times``.
        self.times: dict[str, float] = {"engine": time.time()}

    def save(self, **changes: Any) -> None:
        self.status.update(changes, heartbeat=time.time(), times=self.times)
        write_json(self.paths.status, self.status)
        self._written = time.monotonic()

    def run(self) -> None:
        database = os.path.join(self.paths.round_state_dir, layout.SWF_DATABASE)
        making = threading.Thread(target=make_database, args=(database,), daemon=True)
        making.start()  # it waits for the disk while this thread imports soma-workflow
        from remotemap.backends.cluster import swf

        spec = self.spec
        self.save(pid=os.getpid(), host=socket.gethostname(), state="starting", error=None)
        if spec.get("slurm_conf"):
            os.environ["SLURM_CONF"] = spec["slurm_conf"]
        problem = preflight(spec["scheduler"], spec.get("slurm_conf", ""))
        if problem:
            raise EngineError(problem)
        if self.status.get("wf_id") is None and os.path.exists(self.paths.cancel):
            self.save(state="cancelled", ended=True, jobs=[])
            return
        making.join()
        wfc = swf.light_controller(
            Path(self.paths.round_state_dir),
            SWF_TYPES[spec["scheduler"]], tick=float(spec.get("tick", 0.1)),
            proc_nb=int(spec.get("proc_nb") or 0),
            poll_interval=float(spec.get("poll_interval", 1.0)))
        self.times["controller"] = time.time()
        try:
            if self.status.get("wf_id") is None:
                if spec["scheduler"] == "slurm":
                    check_slurm_options(spec)
                workflow, jobs = swf.build_workflow(spec, self.root)
                wf_id = wfc.submit_workflow(workflow, name=workflow.name,
                                            queue=spec.get("queue") or None)
                # Wake soma-workflow's loop: the jobs go to the scheduler now, not a tick later.
                swf.scheduler_of(wfc).jobs_finished_event.set()
                self.times["submitted"] = time.time()
                self.save(wf_id=wf_id, swf_ids=swf.job_ids(wfc, wf_id, jobs), state="running")
            else:
                for wf_id in self.workflows():
                    swf.adopt_workflow(wfc, wf_id)
                self.save(state="running", adopted=int(self.status.get("adopted", 0)) + 1)
            self.monitor(wfc)
        finally:
            wfc.stop_engine()

    def check_still_wanted(self) -> None:
        """Stop following a round whose run directory was deleted, or whose cluster is gone
        (its slurm.conf removed): nothing could ever read or finish it."""
        if not os.path.isdir(self.paths.rounds_dir):
            raise Abandoned(f"the run directory {self.root} was removed")
        conf = self.spec.get("slurm_conf")
        if conf and not os.path.exists(conf):
            raise Abandoned(f"cluster.slurm_conf {conf} was removed")

    def workflows(self) -> list[int]:
        """The round's soma-workflow workflows: the one submitted first, then those of the
        worker jobs added later (``pilots``)."""
        return [int(self.status["wf_id"]), *(int(w) for w in self.status.get("more_wf_ids")
                                              or [])]

    def rows(self, wfc: Any) -> tuple[list[dict[str, Any]], bool]:
        """What soma-workflow knows of each job of the round, and whether all ended."""
        from soma_workflow import constants

        index = {swf_id: i for i, swf_id in enumerate(self.status["swf_ids"])}
        jobs: list[dict[str, Any]] = [{} for _ in index]
        done = True
        for wf_id in self.workflows():
            rows, _, wf_status, *_ = wfc.workflow_elements_status(wf_id, with_drms_id=True)
            done = done and wf_status == constants.WORKFLOW_DONE
            for job_id, status, _, exit_info, _, drms_id in rows:
                if job_id in index:
                    exit_status, exit_value, signal, usage = exit_info
                    jobs[index[job_id]] = {
                        "status": status, "exit_status": exit_status,
                        "exit_value": _cast(exit_value), "signal": _cast(signal),
                        "usage": usage or "", "drms": _cast(drms_id), "wf": wf_id}
        return jobs, done

    def monitor(self, wfc: Any) -> None:
        keeper = None
        if self.spec.get("dispatch") == "workers":
            from remotemap.backends.cluster.pilots import Keeper

            keeper = Keeper(self)
        tick = float(self.spec.get("tick", 0.1))
        cancelling: float | None = None
        checked = time.monotonic()
        while True:
            if time.monotonic() - checked > 5.0:
                checked = time.monotonic()
                self.check_still_wanted()
            if cancelling is None and os.path.exists(self.paths.cancel):
                cancelling = time.monotonic()
                for wf_id in self.workflows():
                    threading.Thread(target=wfc.stop_workflow, args=(wf_id,),
                                     daemon=True).start()
            self.watch_outcomes(wfc)
            jobs, done = self.rows(wfc)
            self.add_reasons(jobs)
            if keeper is not None and cancelling is None:
                done = keeper.tick(wfc, jobs) and done
            given_up = cancelling is not None and time.monotonic() - cancelling > CANCEL_GRACE
            if done or given_up:
                self.note_end(wfc)
                state = "cancelled" if cancelling is not None else "done"
                self.save(jobs=jobs, state=state, ended=True)
                return
            if jobs != self.status.get("jobs") or time.monotonic() - self._written > HEARTBEAT:
                self.save(jobs=jobs, cancel_requested=cancelling is not None)
            time.sleep(tick)

    def watch_outcomes(self, wfc: Any) -> None:
        """Once every task of the round wrote its outcome, its jobs are about to end and the
        caller waits only for this engine to see it: have the scheduler look soon."""
        if self._awaited is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._awaited -= set(os.listdir(os.path.join(self.root, layout.OUTCOMES)))
        if not self._awaited:
            from remotemap.backends.cluster import swf

            self._awaited = None
            self.times["outcomes"] = time.time()
            scheduler = swf.scheduler_of(wfc)
            if isinstance(scheduler, swf.SacctSlurmScheduler):
                scheduler.hurry()
            scheduler.jobs_finished_event.set()

    def note_end(self, wfc: Any) -> None:
        from remotemap.backends.cluster import swf

        sent = getattr(swf.scheduler_of(wfc), "sbatch_times", None)
        if sent:
            self.times.update(first_sbatch=sent[0], last_sbatch=sent[1])
        self.times["done"] = time.time()

    def add_reasons(self, jobs: list[dict[str, Any]]) -> None:
        """Put SLURM's pending reason on the row of each job it holds in its queue (squeue
        asked at most once per ``poll_interval``): soma-workflow's status does not say why."""
        if self.spec.get("scheduler") != "slurm":
            return
        from remotemap.backends.cluster.pending import QUEUED, squeue_reasons

        queued = [str(j["drms"]) for j in jobs if j.get("status") == QUEUED and j.get("drms")]
        if not queued:
            self._reasons = {}
            return
        if time.monotonic() - self._asked >= float(self.spec.get("poll_interval", 1.0)):
            self._asked = time.monotonic()
            self._reasons = squeue_reasons(queued)
        for job in jobs:
            state, reason = self._reasons.get(str(job.get("drms")), ("", ""))
            if job.get("status") == QUEUED and state == "PENDING" and reason:
                job["reason"] = reason


def make_database(path: str) -> None:
    """soma-workflow's empty database at ``path``, unless there is one (an engine restarted).

    Its ~30 ``CREATE TABLE`` each wait for the disk: done in a thread of its own while the
    engine imports soma-workflow. Made under another name and renamed, so the controller sees a
    whole database or none (and then makes it itself)."""
    if os.path.exists(path):
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        from soma_workflow.database_server import create_database

        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        create_database(tmp)
        os.replace(tmp, path)
    except Exception:  # the controller makes it: say why it was not made here
        traceback.print_exc()
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class Abandoned(Exception):
    """The run directory or the scheduler's configuration is gone: nobody can use the round."""


def serve(root: str, rnd: int) -> int:
    """Run the round's engine in this process (after ``start`` detached it)."""
    paths = RoundPaths(root, rnd)
    os.makedirs(paths.rounds_dir, exist_ok=True)
    lock = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
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
                from remotemap.backends.cluster.handover import remove_if_asked

                remove_if_asked(root)  # the last engine out, when the caller left it to us
        os.close(lock)


def engine_running(root: str, rnd: int) -> bool:
    """Whether an engine holds the round's lock (on this host)."""
    try:
        fd = os.open(RoundPaths(root, rnd).lock, os.O_RDWR)
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
    paths = RoundPaths(root, rnd)
    spec = read_json(paths.spec)
    if spec is None:
        print(f"error: no round {rnd} in {root}", file=sys.stderr)
        return 2
    problem = preflight(spec["scheduler"], spec.get("slurm_conf", ""),
                        needs_timeout=bool(spec.get("task_timeout") or
                                           spec.get("wrapper_walltime")))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 3
    if (read_json(paths.status) or {}).get("ended"):
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
    log = os.open(paths.engine_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
