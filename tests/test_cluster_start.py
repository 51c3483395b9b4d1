"""The fixed cost of a ``mode="cluster"`` call: what the engine does at the start of a round
(soma-workflow's database made beside the imports, the jobs sent at once) and at its end (the
jobs' end seen soon after their last outcome, the caller looking often at an engine about to
exit), and the timeline an engine leaves in its round's status (``times``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.backends.cluster import layout
from remotemap.backends.cluster.engine import make_database
from remotemap.backends.cluster.rounds import FIRST_END_PAUSE, end_pauses
from remotemap.backends.cluster.settings import LOCAL_POLL_INTERVAL, SSH_POLL_INTERVAL
from tests import cluster_support
from tests import taskfuncs as tf
from tests.cluster_support import no_engine_left, round_status

# The shared fixtures, module-scoped per test module (see tests/cluster_support.py).
state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
slurm = cluster_support.slurm


def test_the_caller_looks_at_an_exiting_engine_often_then_less_often() -> None:
    """Through a submitting host (an SFTP round trip per look) the pauses start short and
    grow to the poll interval; here they are the poll interval, already short."""
    pauses = end_pauses({"host": "login"})
    taken = [next(pauses) for _ in range(12)]
    assert taken[0] == FIRST_END_PAUSE < SSH_POLL_INTERVAL
    assert taken == sorted(taken) and taken[-1] == SSH_POLL_INTERVAL
    local = end_pauses({"host": ""})
    assert {next(local) for _ in range(5)} == {min(FIRST_END_PAUSE, LOCAL_POLL_INTERVAL)}


def test_the_database_made_beside_the_imports_is_one_soma_workflow_opens(
        swf: None, tmp_path: Path) -> None:
    from remotemap.backends.cluster.swf import light_controller

    state = tmp_path / "swf" / "0"
    database = state / layout.SWF_DATABASE
    make_database(str(database))
    tables = {row[0] for row in sqlite3.connect(database).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "workflows", "db_version"} <= tables
    assert os.listdir(state) == [layout.SWF_DATABASE]  # no half-made file left beside it
    wfc = light_controller(state, "local_basic")
    try:
        assert wfc.workflows() == {}
    finally:
        wfc.stop_engine()
    before = database.stat()
    make_database(str(database))  # an engine restarted: the database it adopts is kept
    assert database.stat().st_mtime_ns == before.st_mtime_ns
    assert database.stat().st_size == before.st_size


def test_a_database_that_cannot_be_made_leaves_nothing_behind(
        swf: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The controller then makes it itself: a failure here must leave no file it would take
    for a whole database."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    make_database(str(blocked / "swf" / layout.SWF_DATABASE))
    assert "not-a-directory" in capsys.readouterr().err
    assert blocked.read_text() == ""


@pytest.mark.slurm
def test_a_round_ends_soon_after_its_last_outcome_whatever_the_poll_interval(
        slurm: dict[str, Any], runs_dir: Path) -> None:
    """With a 30 s ``poll_interval`` (between two sacct polls) the call still returns a few
    seconds after the jobs wrote their outcomes: the engine looks at them again as soon as
    every outcome is in. Its timeline is in the round's status, in the order of the steps."""
    options = {**slurm, "poll_interval": 30.0, "keep_files": True}
    started = time.monotonic()
    assert remote_map(tf.add, [(1, 2), (3, 4), (5, 6)], **options) == [3, 7, 11]
    assert time.monotonic() - started < 25.0
    run = max(runs_dir.iterdir(), key=lambda p: p.stat().st_mtime)
    times = round_status(run)["times"]
    steps = ["engine", "controller", "submitted", "first_sbatch", "outcomes", "done"]
    assert [name for name in sorted(times, key=times.get) if name in steps] == steps
    assert times["done"] - times["outcomes"] < 25.0
    assert times["last_sbatch"] >= times["first_sbatch"]
    outcomes = [p.stat().st_mtime for p in (run / "outcomes").iterdir()]
    assert len(outcomes) == 3 and max(outcomes) <= times["outcomes"] + 1.0
    no_engine_left(runs_dir)
