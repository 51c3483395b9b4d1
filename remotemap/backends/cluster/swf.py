"""soma-workflow, driven in light mode by remotemap's cluster engine (imported only there).

* :class:`SacctSlurmScheduler`: soma-workflow 6.0.13's ``SlurmScheduler`` with a status query
  that works on Slurm 22.05 and later (the stock class asks ``sacct`` for ``StdOut``, a field
  Slurm added in 23.02, so on 22.05 it never sees a job finish), one batched ``sacct`` call per
  poll for every watched job, exit codes and signals read the right way round, ``CANCELLED``
  and ``TIMEOUT`` reported as final failures, and a submission that quotes every argument and
  keeps ``sbatch``'s own error message (what the ``sacct`` rows mean is decided in
  ``verdict``). See docs/cluster.md ("Slurm 22.05 and newer").
* :func:`light_controller`: a ``WorkflowController`` built from a ``Configuration`` made in
  code, with every file (sqlite database, transfer dir) in the run's private state dir: no
  soma-workflow config file is read or written.
* :func:`build_workflow`: one ``Workflow`` per round of a remotemap run, jobs in one ``Group``.
* :func:`adopt_workflow`: hand a workflow whose engine died to a new engine (instead of the
  broken ``restart_workflow``, which submits running jobs a second time and then hangs).
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import math
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from soma_workflow import constants
from soma_workflow import engine as swf_engine
from soma_workflow.client import Group, Job, Workflow, WorkflowController
from soma_workflow.configuration import LIGHT_MODE, Configuration, LocalSchedulerCfg
from soma_workflow.errors import DRMError
from soma_workflow.schedulers import slurm_scheduler

from remotemap.backends.cluster import layout
from remotemap.backends.cluster.verdict import (
    SACCT_FIELDS,
    ExitInfo,
    SacctRecord,
    parse_sacct,
    slurm_exit_info,
    slurm_status,
)

_SACCT_BATCH = 200  # job ids per sacct call (keeps the command line short)
#: Seconds between sacct polls right after :meth:`SacctSlurmScheduler.hurry`; each gap after
#: it is ``HURRY_GROWTH`` times the one before, up to ``poll_interval``.
HURRY_FIRST = 0.1
HURRY_GROWTH = 1.5

def slurm_script(command: list[str], *, name: str, queue: str | None,
                 native: list[str], env: dict[str, str], workdir: str | None) -> str:
    """The batch script for one job: every argument and value shell-quoted.

    soma-workflow's own script writer double-quotes arguments only, so ``$``, backquotes and
    backslashes in them were expanded by the batch shell, and ``export VAR=value`` was unquoted.
    """
    lines = ["#!/bin/bash", f"#SBATCH -J {re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"]
    if queue:
        lines.append(f"#SBATCH -p {queue}")
    lines += [f"#SBATCH {spec}" for spec in native]
    lines += [f"export {var}={shlex.quote(value)}" for var, value in env.items()]
    if workdir:
        lines.append(f"cd {shlex.quote(workdir)}")
    lines.append("srun " + shlex.join(command))
    return "\n".join(lines) + "\n"


def native_list(spec: Any) -> list[str]:
    """A native specification as soma-workflow stores it (a list, or its ``str``) as a list."""
    if not spec:
        return []
    if isinstance(spec, str):
        if spec.startswith("["):
            return [str(s) for s in ast.literal_eval(spec)]  # soma-workflow would eval() it
        return [spec]
    return [str(s) for s in spec]


# ---------------------------------------------------------------------------- the scheduler
class SacctSlurmScheduler(slurm_scheduler.SlurmScheduler):  # type: ignore[misc]
    """soma-workflow's ``SlurmScheduler`` fixed for Slurm 22.05+ (see the module docstring).

    Overrides ``build_scheduler`` (the inherited one hard-codes ``SlurmScheduler(...)``),
    ``submit_one_job`` (quoted script, ``sbatch --parsable``, sbatch's message kept in the
    error, which soma-workflow writes to the job's stderr file) and the three status methods.
    ``kill_job`` (``scancel``) is inherited. One ``sacct`` call refreshes every job still
    watched, at most once per ``poll_interval`` seconds: the engine asks per job, per tick;
    sooner after :meth:`hurry` (the jobs are about to end).
    """

    poll_interval = 1.0
    #: A job that ended before sacct shows the whole of its exit (its srun step, which holds
    #: the signal if one killed the command; the code it failed with) reads as running for
    #: at most this long (``SacctRecord.exit_pending``).
    step_grace = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._records: dict[str, SacctRecord] = {}
        self._watched: set[str] = set()
        self._last_poll = 0.0
        self._ended_without_step: dict[str, float] = {}
        self._gap = math.inf  # seconds between polls while hurried (inf: poll_interval)
        self.sacct_calls = 0
        #: time.time() of the first and of the latest sbatch (the engine's timeline).
        self.sbatch_times: tuple[float, float] | None = None

    @classmethod
    def build_scheduler(cls, config: Any) -> SacctSlurmScheduler:
        return cls(config.get_parallel_job_config(), os.path.expanduser("~"),
                   configured_native_spec=config.get_native_specification())

    # -- submission
    def submit_one_job(self, job: Any) -> Any:
        if job.is_engine_execution:  # a barrier: nothing to run
            job.status = constants.DONE
            return self.FAKE_JOB
        stdout, stderr = job.plain_stdout(), job.plain_stderr()
        for path in (stdout, stderr):
            if path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
        native = native_list(job.native_specification or self._configured_native_spec)
        script = slurm_script(list(job.plain_command()), name=str(job.name), queue=job.queue,
                              native=native, env=dict(job.env or {}),
                              workdir=job.plain_working_directory())
        fd, script_path = tempfile.mkstemp(prefix="remotemap-job-", suffix=".sh",
                                           dir=os.path.dirname(stdout) if stdout else None)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        command = [*self.sbatch_command(), "--parsable"]
        command += ["-o", stdout] if stdout else []
        command += ["-e", stderr] if stderr and not job.join_stderrout else []
        try:
            done = subprocess.run([*command, script_path], capture_output=True, text=True,
                                  timeout=120, check=False)
        finally:
            os.unlink(script_path)
        if done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip() or "no output")
            raise DRMError(f"sbatch exited with status {done.returncode}: {message}")
        job_id = done.stdout.strip().split(";")[0]
        with self._lock:
            self._watched.add(job_id)
            now = time.time()
            self.sbatch_times = (self.sbatch_times[0] if self.sbatch_times else now, now)
        return job_id

    def hurry(self) -> None:
        """The jobs are about to end (every task wrote its outcome): poll sacct again after
        ``HURRY_FIRST`` seconds, then less and less often (``HURRY_GROWTH``) up to
        ``poll_interval``: the engine sees the end within a fraction of a second rather than a
        whole interval (the caller waits for it), and sacct is not asked that often for long
        if a job lingers."""
        with self._lock:
            self._gap = HURRY_FIRST

    # -- status cache
    def _refresh(self, wanted: str) -> None:
        """One sacct call for every watched job, at most once per ``poll_interval``.

        A job sacct does not know yet (just submitted) reads as pending until the next poll.
        """
        self._watched.add(wanted)  # jobs of an adopted workflow were not submitted by us
        if time.monotonic() - self._last_poll < min(self.poll_interval, self._gap):
            return
        ids = sorted(self._watched, key=lambda j: (len(j), j))
        found: dict[str, SacctRecord] = {}
        for start in range(0, len(ids), _SACCT_BATCH):
            chunk = ids[start : start + _SACCT_BATCH]
            command = [*self.sacct_command(), "-n", "-P", "-j", ",".join(chunk),
                       "-o", ",".join(SACCT_FIELDS)]
            self.sacct_calls += 1
            output = subprocess.run(command, capture_output=True, text=True, check=True,
                                    timeout=60).stdout
            found.update(parse_sacct(output))
        self._last_poll = time.monotonic()
        self._gap *= HURRY_GROWTH
        self._records.update(found)
        self._watched -= {
            job_id for job_id, rec in found.items()
            if rec.finished and not (rec.exit_pending and self._step_pending(job_id))}

    def record(self, scheduler_job_id: str) -> SacctRecord | None:
        """The latest sacct record of a job (None while sacct does not know it yet)."""
        job_id = str(scheduler_job_id)
        with self._lock:
            self._refresh(job_id)
            return self._records.get(job_id)

    def _step_pending(self, job_id: str) -> bool:
        first_seen = self._ended_without_step.setdefault(job_id, time.monotonic())
        return time.monotonic() - first_seen < self.step_grace

    # -- soma-workflow Scheduler API
    def get_job_extended_status(self, scheduler_job_id: str) -> dict[str, Any]:
        rec = self.record(scheduler_job_id)
        if rec is None:
            return {"job_state": "PENDING"}
        return {"job_state": rec.state, "ExitCode": rec.exit_code, "Signal": rec.exit_signal,
                "DerivedExitCode": rec.derived_code, "TotalCPU": rec.total_cpu,
                "MaxRSS": rec.max_rss, "TimeLimit": rec.time_limit, "NCPUS": rec.ncpus}

    def get_job_status(self, scheduler_job_id: Any) -> str:
        if scheduler_job_id == self.FAKE_JOB:
            return str(constants.DONE)
        try:
            rec = self.record(scheduler_job_id)
        except (OSError, subprocess.SubprocessError) as exc:
            self.logger.warning("sacct failed: %s", exc)
            return str(constants.UNDETERMINED)
        may_wait = rec is not None and rec.exit_pending and self._step_pending(rec.job_id)
        return slurm_status(rec, may_wait=may_wait)

    def get_job_exit_info(self, scheduler_job_id: Any) -> ExitInfo:
        if scheduler_job_id == self.FAKE_JOB:
            return (constants.FINISHED_REGULARLY, 0, None, "")
        # The engine asks right after get_job_status said the job ended: use that record.
        # No sacct call here: an exception from this method kills the engine thread.
        with self._lock:
            rec = self._records.get(str(scheduler_job_id))
        return slurm_exit_info(rec)


def use_sacct_scheduler() -> None:
    """Make soma-workflow's ``slurm`` scheduler type build :class:`SacctSlurmScheduler`.

    ``soma_workflow.scheduler.get_scheduler_implementation("slurm")`` imports
    ``soma_workflow.schedulers.slurm_scheduler`` and returns its ``__main_scheduler__`` when
    the module defines one (``local_scheduler`` uses this hook): set it, in memory only.
    """
    slurm_scheduler.__main_scheduler__ = SacctSlurmScheduler


# ------------------------------------------------------------------------ the controller
class QuietWorkflowController(WorkflowController):  # type: ignore[misc]
    """``WorkflowController`` whose ``__init__``/``__del__`` print nothing to stdout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(*args, **kwargs)

    def __del__(self) -> None:
        # The base prints "del WorkflowController", then stops the engine.
        self.stop_engine()


def light_controller(state_dir: Path, scheduler_type: str, *, tick: float = 0.1,
                     proc_nb: int = 0, poll_interval: float = 1.0) -> WorkflowController:
    """A light-mode WorkflowController with its database and files under ``state_dir``.

    ``scheduler_type`` is a soma-workflow type: ``local_basic``, ``slurm``, ``pbspro``,
    ``drmaa``. Nothing is read from (or written to) a soma-workflow config file.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    transfers = state_dir / "transfered_files"
    transfers.mkdir(exist_ok=True)
    if scheduler_type == "slurm":
        use_sacct_scheduler()
        SacctSlurmScheduler.poll_interval = poll_interval
    swf_engine.refreshment_interval = tick  # engine loop tick and wait_* polling period
    config = Configuration("remotemap", LIGHT_MODE, scheduler_type,
                           str(state_dir / layout.SWF_DATABASE), str(transfers))
    # A light-mode controller reads ~/.soma-workflow-scheduler.cfg when there is one (and a
    # file without SCHEDULER_INTERVAL hangs the local scheduler). This process is remotemap's
    # engine: tell soma-workflow there is none, so the defaults (one job per CPU, 0.05 s
    # interval) apply and nothing under HOME is read (or, as set_proc_nb would, written).
    LocalSchedulerCfg.search_config_path = staticmethod(lambda: None)
    wfc = QuietWorkflowController("remotemap", config=config)
    if scheduler_type == "local_basic" and proc_nb:
        wfc._engine_proxy.engine_loop._scheduler.change_proc_nb(proc_nb)
    for name in ("engine", "jobServer", "ljp.slurm_scheduler", "ljp.pbspro_scheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return wfc


def scheduler_of(wfc: WorkflowController) -> Any:
    """The controller's scheduler (a :class:`SacctSlurmScheduler` for SLURM)."""
    return wfc._engine_proxy.engine_loop._scheduler


# --------------------------------------------------------------------------- the workflow
def build_workflow(spec: dict[str, Any], root: str) -> tuple[Workflow, list[Job]]:
    """One round of a run as a soma-workflow ``Workflow``: a job per entry of
    ``spec["jobs"]``, each ``python -m remotemap.worker run ROOT --key-file KEY FILE...``, all
    in one group.

    With ``spec["canary"]``, every job but the first depends on the first: a failure that
    would hit every job (no Python, remotemap missing on the nodes) then costs one job. A
    workflow's round gives its own ``spec["dependencies"]`` (pairs of job numbers: the second
    starts once the first ended well) and ``spec["fail_exit"]`` (a job whose task failed
    exits non-zero, so soma-workflow starts none of the jobs after it).
    """
    jobs = [_job(spec, root, number, files) for number, files in enumerate(spec["jobs"])]
    if spec.get("dependencies") is not None:
        dependencies = [(jobs[before], jobs[after]) for before, after in spec["dependencies"]]
    else:
        canary = spec.get("canary") and spec.get("dispatch") != "workers"  # held in the queue
        dependencies = [(jobs[0], job) for job in jobs[1:]] if canary else []
    label = f"remotemap {spec.get('function', 'run')} ({spec['run_id']}, round {spec['round']})"
    workflow = Workflow(jobs, dependencies=dependencies, root_group=[Group(jobs, name=label)],
                        name=f"remotemap-{spec['run_id']}-{spec['round']}")
    return workflow, jobs


def _job(spec: dict[str, Any], root: str, number: int, files: list[int]) -> Job:
    """Job ``number`` of the round: ``run`` of its ``files``, or (``spec["dispatch"]`` is
    ``workers``) a worker job that pulls chunks from the round's queue (``remotemap.pilot``)."""
    # The engine runs on the submitting host as the jobs' user: a "~" in cluster.python is
    # that user's home there (a batch script would not expand it once quoted).
    python = os.path.expanduser(str(spec["python"]))
    start = [python, "-m", "remotemap.worker"]
    if spec.get("dispatch") == "workers":
        command = [*start, "pilot", root, "--key-file", spec["key_file"],
                   "--round", str(spec["round"]), "--job", str(number),
                   "--workers", str(len(spec["jobs"])),
                   "--walltime", str(spec.get("walltime_seconds") or 0)]
    else:
        seconds = _job_seconds(spec, len(files))
        wrapper = ["timeout", "-k", "5", f"{seconds:g}"] if seconds else []
        command = [*wrapper, *start, "run", root, "--key-file", spec["key_file"],
                   *(["--fail-exit"] if spec.get("fail_exit") else []),
                   *(str(f) for f in files)]
    name = layout.job_name(spec["run_id"], spec["round"], number)
    logs = {stream: os.path.join(root, layout.job_log_name(spec["round"], number, stream))
            for stream in ("out", "err")}
    native = list(spec.get("native") or [])
    env = dict(spec.get("env") or {})
    return Job(command, name=name, stdout_file=logs["out"], stderr_file=logs["err"],
               working_directory=root, native_specification=native or None, env=env or None)


def worker_workflow(spec: dict[str, Any], root: str, numbers: range) -> tuple[Workflow, list[Job]]:
    """More worker jobs for a round run by worker jobs (numbered ``numbers``), as a workflow
    of their own: soma-workflow cannot add jobs to a submitted one."""
    jobs = [_job(spec, root, number, []) for number in numbers]
    label = f"remotemap {spec.get('function', 'run')} ({spec['run_id']}, round {spec['round']})"
    workflow = Workflow(jobs, root_group=[Group(jobs, name=label)],
                        name=f"remotemap-{spec['run_id']}-{spec['round']}-{numbers.start}")
    return workflow, jobs


def _job_seconds(spec: dict[str, Any], n_tasks: int) -> float:
    """A job's time limit enforced by ``timeout`` (0 = none): ``task_timeout`` per task, plus
    a few seconds to start the interpreter; or ``wrapper_walltime`` (the local scheduler has
    no walltime of its own)."""
    limits = []
    if spec.get("task_timeout"):
        limits.append(float(spec["task_timeout"]) * n_tasks + 5.0)
    if spec.get("wrapper_walltime"):
        limits.append(float(spec["wrapper_walltime"]))
    return min(limits) if limits else 0.0


def job_ids(wfc: WorkflowController, wf_id: int, jobs: list[Job]) -> list[int]:
    """soma-workflow's id of each job, in the order of ``jobs`` (matched by name)."""
    workflow = wfc.workflow(wf_id)
    by_name = {job.name: workflow.job_mapping[job].job_id for job in workflow.jobs}
    return [int(by_name[job.name]) for job in jobs]


def adopt_workflow(wfc: WorkflowController, wf_id: int) -> None:
    """Hand an orphaned in-progress workflow (its engine died) to this controller's engine.

    ``WorkflowController.restart_workflow`` cannot do it: the workflow it unpickles from the
    database carries the status it had at submission (not started), so ``restart`` treats
    every unfinished job as to-run, submits the queued/running ones a second time and, as
    their old exit info is kept, never polls the new ids: the workflow hangs. This reads the
    same database rows, keeps each job's scheduler id so the engine polls it, sends back to
    the queue only the jobs that never reached the scheduler, and submits the jobs whose
    dependencies ended while no engine was alive. Uses engine internals (light mode).
    """
    loop = wfc._engine_proxy.engine_loop
    db = loop._database_server
    workflow = db.get_engine_workflow(wf_id, loop._user_id)
    workflow._update_state_from_database_server(db)
    never_sent = {}
    for job in workflow.job_mapping.values():
        if not job.is_done() and job.drmaa_id is None:
            job.status = constants.NOT_SUBMITTED
            never_sent[job.job_id] = constants.NOT_SUBMITTED
    if never_sent:
        db.set_jobs_status(never_sent)
    workflow.cache = None
    with loop._lock:
        to_run, aborted, workflow.status = workflow.find_out_jobs_to_process()
        if aborted:
            db.set_jobs_status({job_id: job.status for job_id, job in aborted.items()})
            db.set_jobs_exit_info(aborted)
        loop._pend_for_submission(to_run)
        loop._workflows[wf_id] = workflow
