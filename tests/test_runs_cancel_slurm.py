"""``remotemap cancel`` then ``remotemap collect`` on a real single-node SLURM: what collect says
of each task is what happened to it (tests/infra/slurm.py, tests/cluster_support.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException
from remotemap.backends.cluster import collect, submit
from remotemap.backends.cluster.runs import CANARY_ABOVE
from remotemap.cli import main as cli_main
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import wait_for

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
slurm = cluster_support.slurm


@pytest.mark.slurm
def test_collect_after_cancel_says_the_run_was_cancelled(
        slurm: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A round of more than CANARY_ABOVE jobs runs its first job alone; cancelled once that
    job completed, the jobs never started were stopped by the cancel, not by a failed first
    job (collect used to say "the round's first job failed")."""
    options = {k: v for k, v in slurm.items() if k not in ("mode", "progress")}
    stem = str(tmp_path / "t")
    n = CANARY_ABOVE + 2
    run_id = submit(tf.pid_and_sleep, [(stem, i, 0.0 if i == 0 else 120.0) for i in range(n)],
                    tasks_per_job=1, **options)
    run_dir = Path(options["shared_dir"]) / run_id
    wait_for("the first job's outcome", lambda: list((run_dir / "outcomes").iterdir()),
             timeout=120)
    assert cli_main(["cancel", run_id]) == 0
    capsys.readouterr()
    with pytest.raises(RemoteException) as info:
        collect(run_id, timeout=60)
    exc = info.value
    assert exc.results[0] == 0  # the first job completed
    assert {f.index for f in exc.failures} == set(range(1, n))
    for failure in exc.failures:
        assert failure.kind == "cancelled", failure.message
        assert "first job failed" not in failure.message
        assert f"task {failure.index} was not run: its job was not started: the run was " \
               "cancelled before the job's turn (remotemap cancel)" in failure.message
    # `remotemap runs` reads it the same way, without waiting; then it can be removed.
    assert cli_main(["runs", "show", run_id]) == 0
    out = capsys.readouterr().out
    assert f"state: cancelled; {n} tasks: 1 ok, {n - 1} failed, 0 pending" in out
    assert "the run was cancelled before the job's turn" in out
    assert cli_main(["runs", "clean", run_id]) == 1  # not without --force
    assert cli_main(["runs", "clean", "--force", run_id]) == 0
    assert not run_dir.exists()
