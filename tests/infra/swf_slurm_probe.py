"""Prototype: drive a real SLURM from soma-workflow 6.0.13 in light mode, in-process.

What it shows (see docs/notes-soma-workflow-slurm.md for the findings):

* :class:`SacctSlurmScheduler`, a small subclass of soma-workflow's ``SlurmScheduler`` that
  asks ``sacct`` only for fields every Slurm since 20.11 has (the stock class asks for
  ``StdOut``, which Slurm 22.05 rejects, so it never sees a job finish), batches one ``sacct``
  call for all watched jobs, and maps states/exit codes the way the local scheduler does;
* :func:`light_controller`, a ``WorkflowController`` built from a ``Configuration`` made in
  code, with all state (sqlite database, transfer dir) in a private directory;
* a demo workflow (success, exit 3, SIGKILL, external ``scancel``, ``stop_jobs``, optional
  walltime, dependents of a success and of a failure), a small benchmark, and a detach test
  (submit in one process, resume in another).

Run from the repository root, as root (it starts its own cluster)::

    python -m tests.infra.swf_slurm_probe demo [--scheduler slurm|local|stock] [--walltime]
    python -m tests.infra.swf_slurm_probe bench
    python -m tests.infra.swf_slurm_probe detach
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soma_workflow import constants
from soma_workflow import engine as swf_engine
from soma_workflow.client import Group, Job, Workflow, WorkflowController
from soma_workflow.configuration import LIGHT_MODE, Configuration
from soma_workflow.schedulers import slurm_scheduler

# The fixed scheduler, the quiet controller and the light-mode controller builder are
# remotemap's own now (remotemap/backends/cluster/swf.py); this probe drives them.
from remotemap.backends.cluster.swf import QuietWorkflowController, adopt_workflow
from remotemap.backends.cluster.swf import (  # re-exported: tests/test_slurm_infra.py uses them
    SacctSlurmScheduler as SacctSlurmScheduler,
)
from remotemap.backends.cluster.swf import light_controller as light_controller
from tests.infra.slurm import SingleNodeSlurm


def close_controller(wfc: WorkflowController) -> None:
    """Stop the engine thread (joins it for at most 3 s)."""
    wfc.stop_engine()


# --------------------------------------------------------------------------- the workflows
def _sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


@dataclass
class Demo:
    workflow: Workflow
    names: dict[int, str] = field(default_factory=dict)


def demo_workflow(out_dir: Path, *, walltime: bool) -> Workflow:
    ok = Job(_sh(f"echo hello > {out_dir}/ok.txt; echo note-on-stderr >&2"), name="ok")
    exit3 = Job(_sh("echo about to fail >&2; exit 3"), name="exit3")
    # Not "kill -9 $$": the batch script's bash would expand $$ to its own pid.
    sigkill = Job(
        ["/usr/bin/python3", "-c", "import os; os.write(2, b'bye\\n'); os.kill(os.getpid(), 9)"],
        name="sigkill",
    )
    scancelled = Job(["sleep", "300"], name="scancelled")
    stopped = Job(["sleep", "300"], name="stopped")
    after_ok = Job(_sh(f"cat {out_dir}/ok.txt"), name="after_ok")
    after_fail = Job(["true"], name="after_fail")
    jobs = [ok, exit3, sigkill, scancelled, stopped, after_ok, after_fail]
    if walltime:
        jobs.append(Job(["sleep", "300"], name="walltime", native_specification="--time=1"))
    return Workflow(
        jobs,
        dependencies=[(ok, after_ok), (exit3, after_fail)],
        root_group=[Group(jobs, name="demo")],
        name="probe-demo",
    )


def _elements(wfc: WorkflowController, wf_id: int) -> dict[str, tuple[Any, ...]]:
    """job name -> (job_id, status, queue, exit_info, dates, drms_id)."""
    wf = wfc.workflow(wf_id)
    names = {wf.job_mapping[j].job_id: j.name for j in wf.jobs}
    status = wfc.workflow_elements_status(wf_id, with_drms_id=True)
    return {names[row[0]]: tuple(row) for row in status[0]}


def _wait_running(wfc: WorkflowController, wf_id: int, name: str, timeout: float) -> Any:
    """Wait until job ``name`` runs; return its SLURM id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _elements(wfc, wf_id)[name]
        if row[1] == constants.RUNNING:
            return row[5]
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not start")


def _stderr_tail(wfc: WorkflowController, job_id: int, tmp: Path) -> str:
    out, err = tmp / f"{job_id}.out", tmp / f"{job_id}.err"
    try:
        wfc.retrieve_job_stdouterr(job_id, str(out), str(err))
        text = err.read_text(errors="replace").strip()
    except Exception as exc:  # report, do not hide the other jobs
        return f"<{type(exc).__name__}: {exc}>"
    return " | ".join(text.splitlines()[-2:])


def run_demo(scheduler_type: str, state_dir: Path, *, walltime: bool, timeout: float) -> None:
    wfc = light_controller(state_dir / "swf", scheduler_type)
    out_dir = state_dir / "out"
    out_dir.mkdir()
    began = time.monotonic()
    wf_id = wfc.submit_workflow(demo_workflow(out_dir, walltime=walltime), name="probe-demo")
    print(f"submitted workflow {wf_id} ({scheduler_type})")
    drms_id = _wait_running(wfc, wf_id, "scancelled", 30)
    if scheduler_type == "local_basic":
        os.kill(int(_pid_of_local_job(drms_id)), signal.SIGTERM)
    else:
        subprocess.run(["scancel", str(drms_id)], check=True)
    stopped_id = _elements(wfc, wf_id)["stopped"][0]
    _wait_running(wfc, wf_id, "stopped", 30)
    wfc.stop_jobs(wf_id, [stopped_id])
    wfc.wait_workflow(wf_id, timeout=timeout)
    elapsed = time.monotonic() - began
    rows = _elements(wfc, wf_id)
    print(f"workflow status: {wfc.workflow_status(wf_id)} after {elapsed:.1f} s")
    print(f"{'job':<11} {'status':<12} {'exit status':<22} {'value':>5} {'sig':>4}  stderr tail")
    for name, row in rows.items():
        job_id, status = row[0], row[1]
        exit_status, value, sig, usage = wfc.job_termination_status(job_id)
        tail = _stderr_tail(wfc, job_id, state_dir)
        print(f"{name:<11} {status:<12} {exit_status!s:<22} {value!s:>5} {sig!s:>4}  {tail}")
        if usage:
            print(f"{'':<11} usage: {usage}")
    close_controller(wfc)


def _pid_of_local_job(drms_id: Any) -> int:
    """The local scheduler's id is its own counter: find the `sleep 300` started by us."""
    out = subprocess.run(
        ["pgrep", "-f", "-P", str(os.getpid()), "^sleep 300"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return int(out[0])


# ------------------------------------------------------------------------------ benchmark
TASK = ["/usr/bin/python3", "-c", "pass"]


def bench_workflow(n_jobs: int, tasks: int) -> Workflow:
    per_job = tasks // n_jobs
    loop = " ".join(TASK)
    if per_job == 1:
        jobs = [Job(list(TASK), name=f"t{i}") for i in range(n_jobs)]
    else:
        # No "$": soma-workflow puts each argument in double quotes in a bash script.
        numbers = " ".join(str(i) for i in range(per_job))
        jobs = [
            Job(_sh(f"for i in {numbers}; do {loop}; done"), name=f"chunk{i}")
            for i in range(n_jobs)
        ]
    return Workflow(jobs, name=f"bench-{n_jobs}")


def run_bench(scheduler_type: str, state_dir: Path, n_jobs: int, tasks: int) -> float:
    wfc = light_controller(state_dir, scheduler_type)
    began = time.monotonic()
    wf_id = wfc.submit_workflow(bench_workflow(n_jobs, tasks))
    wfc.wait_workflow(wf_id, timeout=600)
    elapsed = time.monotonic() - began
    rows = wfc.workflow_elements_status(wf_id)[0]
    bad = [r for r in rows if r[1] != constants.DONE or r[3][1] != 0]
    sched = wfc._engine_proxy.engine_loop._scheduler  # probe only: read the call counter
    calls = getattr(sched, "sacct_calls", "-")
    print(
        f"{scheduler_type:<12} {n_jobs:>4} jobs x {tasks // n_jobs:>3} tasks: "
        f"{elapsed:6.1f} s  failed={len(bad)}  sacct calls={calls}"
    )
    close_controller(wfc)
    return elapsed


# ------------------------------------------------------------------------------ detach
def detach_submit(state_dir: Path, *, crash: bool = False) -> None:
    """Submit, wait until the first jobs are in SLURM, exit without waiting (or SIGKILL self)."""
    wfc = light_controller(state_dir, "slurm")
    first = [Job(["sleep", "4"], name=f"first{i}") for i in range(3)]
    last = Job(_sh(f"echo all done > {state_dir}/last.txt"), name="last")
    wf = Workflow([*first, last], dependencies=[(j, last) for j in first], name="detached")
    wf_id = wfc.submit_workflow(wf)
    time.sleep(1.5)
    print(f"WF_ID={wf_id}")
    print(f"submit: status {wfc.workflow_status(wf_id)}, jobs {_statuses(wfc, wf_id)}")
    sys.stdout.flush()
    if crash:
        os.kill(os.getpid(), signal.SIGKILL)
    # Process exits here; light mode's engine thread dies with it, SLURM keeps the jobs.


def detach_resume(state_dir: Path, wf_id: int, *, use_restart: bool = False) -> None:
    """A later process: reopen the same database, take the workflow over, wait."""
    wfc = light_controller(state_dir, "slurm")
    print(f"resume: before {wfc.workflow_status(wf_id)}, jobs {_statuses(wfc, wf_id)}")
    began = time.monotonic()
    if use_restart:
        wfc.restart_workflow(wf_id)
    else:
        adopt_workflow(wfc, wf_id)
    wfc.wait_workflow(wf_id, timeout=30 if use_restart else 120)
    print(
        f"resume: after {time.monotonic() - began:.1f} s {wfc.workflow_status(wf_id)}, "
        f"jobs {_statuses(wfc, wf_id)}"
    )
    last = state_dir / "last.txt"
    print(f"resume: last.txt = {last.read_text().strip() if last.exists() else None!r}")
    close_controller(wfc)


def _statuses(wfc: WorkflowController, wf_id: int) -> list[tuple[Any, Any, Any]]:
    return [(r[1], r[3][1], r[5]) for r in wfc.workflow_elements_status(wf_id, True)[0]]


def run_detach(
    cluster: SingleNodeSlurm,
    state_dir: Path,
    *,
    use_restart: bool,
    gap: float = 6.0,
    crash: bool = False,
) -> None:
    env = cluster.env()
    command = [sys.executable, "-m", "tests.infra.swf_slurm_probe"]
    sub = subprocess.run(
        [*command, "detach-submit", str(state_dir), *(["--crash"] if crash else [])],
        env=env,
        capture_output=True,
        text=True,
    )
    print(sub.stdout.strip(), sub.stderr.strip()[-500:], f"(exit {sub.returncode})")
    wf_id = next(line.split("=")[1] for line in sub.stdout.splitlines() if "WF_ID=" in line)
    queue = cluster.run(["squeue", "-h", "-o", "%i %T %j"]).stdout.strip()
    print(f"squeue after the submitting process exited:\n{queue}")
    time.sleep(gap)  # with the default, the first jobs (sleep 4) end while no engine runs
    flags = ["--use-restart"] if use_restart else []
    res = subprocess.run(
        [*command, "detach-resume", str(state_dir), wf_id, *flags],
        env=env,
        capture_output=True,
        text=True,
    )
    print(res.stdout.strip(), res.stderr.strip()[-500:], f"(exit {res.returncode})")


# ---------------------------------------------------------------------------------- main
@contextlib.contextmanager
def cluster_env(needed: bool) -> Iterator[SingleNodeSlurm | None]:
    """Start a private cluster and export its SLURM_CONF into os.environ for soma-workflow."""
    if not needed:
        yield None
        return
    with SingleNodeSlurm() as cluster:
        print(f"SLURM started in {cluster.start_seconds:.2f} s")
        old = os.environ.get("SLURM_CONF")
        os.environ.update(cluster.client_env())
        try:
            yield cluster
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo")
    demo.add_argument("--scheduler", choices=["slurm", "local", "stock"], default="slurm")
    demo.add_argument("--walltime", action="store_true", help="add a --time=1 job (~90 s)")
    bench = sub.add_parser("bench")
    bench.add_argument("--scheduler", choices=["slurm", "local", "both"], default="both")
    bench.add_argument("--tasks", type=int, default=200)
    detach = sub.add_parser("detach")
    resume = sub.add_parser("detach-resume")
    resume.add_argument("state_dir", type=Path)
    resume.add_argument("wf_id", type=int)
    for parser_ in (detach, resume):
        parser_.add_argument(
            "--use-restart", action="store_true", help="resume with restart_workflow (hangs)"
        )
    detach.add_argument("--gap", type=float, default=6.0, help="seconds with no engine")
    submit = sub.add_parser("detach-submit")
    submit.add_argument("state_dir", type=Path)
    for parser_ in (detach, submit):
        parser_.add_argument("--crash", action="store_true", help="submitter dies by SIGKILL")
    args = parser.parse_args(argv)

    if args.command == "detach-submit":
        detach_submit(args.state_dir, crash=args.crash)
        return 0
    if args.command == "detach-resume":
        detach_resume(args.state_dir, args.wf_id, use_restart=args.use_restart)
        return 0
    uses_slurm = args.command == "detach" or getattr(args, "scheduler", "") != "local"
    with (
        tempfile.TemporaryDirectory(prefix="swf-probe-") as tmp,
        cluster_env(uses_slurm) as cluster,
    ):
        state = Path(tmp)
        if args.command == "demo":
            if args.scheduler == "stock":
                slurm_scheduler.__main_scheduler__ = slurm_scheduler.SlurmScheduler
                swf_engine.refreshment_interval = 0.1
                _run_stock(state)
            else:
                kind = "slurm" if args.scheduler == "slurm" else "local_basic"
                run_demo(kind, state, walltime=args.walltime, timeout=240)
        elif args.command == "bench":
            kinds = ["slurm", "local_basic"] if args.scheduler == "both" else [args.scheduler]
            for kind in kinds:
                for n_jobs in (8, args.tasks):
                    run_bench(
                        kind if kind != "local" else "local_basic",
                        state / f"{kind}{n_jobs}",
                        n_jobs,
                        args.tasks,
                    )
        else:
            assert cluster is not None
            run_detach(cluster, state, use_restart=args.use_restart, gap=args.gap, crash=args.crash)
    return 0


def _run_stock(state_dir: Path) -> None:
    """The unmodified SlurmScheduler: the job completes in SLURM, soma-workflow never knows."""
    transfers = state_dir / "tr"
    transfers.mkdir()
    config = Configuration(
        "remotemap", LIGHT_MODE, "slurm", str(state_dir / "db.sqlite"), str(transfers)
    )
    wfc = QuietWorkflowController("remotemap", config=config)
    print(f"scheduler class: {type(wfc._engine_proxy.engine_loop._scheduler).__name__}")
    wf_id = wfc.submit_workflow(Workflow([Job(["true"], name="true")]))
    wfc.wait_workflow(wf_id, timeout=10)
    rows = wfc.workflow_elements_status(wf_id, with_drms_id=True)[0]
    print(
        f"after 10 s: workflow {wfc.workflow_status(wf_id)}; job (status, drms id): "
        f"{[(r[1], r[5]) for r in rows]}"
    )
    for row in rows:
        sacct = subprocess.run(
            ["sacct", "-n", "-X", "-j", str(row[5]), "-o", "JobID,State,ExitCode"],
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"sacct says: {sacct.stdout.strip()}")
    close_controller(wfc)


if __name__ == "__main__":
    sys.exit(main())
