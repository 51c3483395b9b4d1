"""The helpers behind the SLURM rows of ``benchmarks.peers_slurm`` (issue 15): counting a row's
``sbatch`` submissions from ``sacct``, reading ``--cluster-option``, the ideal time, the table.

Speed is never asserted here (it is measured by the benchmark itself); none of this needs the
``bench`` extra. The last test submits real jobs and a real job array to the private SLURM.
"""

from __future__ import annotations

import argparse
import os
import time

import pytest

from benchmarks import sacct
from benchmarks.slurm_rows import LoadSampler, cluster_option, ideal_seconds, render
from tests.infra.slurm import SingleNodeSlurm

# In the form `sacct -n -X -P -a -o JobID,JobIDRaw,State` prints (slurm-wlm 22.05): job 4 is
# before the row; 5 and 6 are plain jobs; 7 is an array whose tasks got raw ids 7-10, the last
# two still pending as one remainder line.
RECORDED = """\
4|4|COMPLETED
5|5|COMPLETED
6|6|CANCELLED by 0
7_0|8|COMPLETED
7_1|9|COMPLETED
7_2|7|RUNNING
7_[3-4]|10|PENDING
garbage line
"""


def test_an_array_is_one_submission_of_its_tasks_and_earlier_jobs_are_left_out() -> None:
    lines = sacct.parse_lines(RECORDED)
    assert [line.state for line in lines][:3] == ["COMPLETED", "COMPLETED", "CANCELLED"]
    found = sacct.count(lines, after_id=4)
    # The pending remainder "7_[3-4]" is not a task of its own yet.
    assert found == sacct.Submissions(sbatch_calls=3, arrays=1, array_tasks=3, jobs=6)
    assert found.describe().startswith("3 sbatch (1 job array(s) of 3 array tasks")
    assert sacct.count(lines, after_id=10) == sacct.Submissions(0, 0, 0, 0)


def test_cluster_option_reads_toml_values_else_text() -> None:
    assert cluster_option("tasks_per_job=50") == ("tasks_per_job", 50)
    assert cluster_option("poll_interval = 0.5") == ("poll_interval", 0.5)
    assert cluster_option("shared_dir=/tmp/runs") == ("shared_dir", "/tmp/runs")


@pytest.mark.parametrize(("text", "culprit"), [("taks_per_job=5", "taks_per_job"),
                                               ("tasks_per_job", "KEY=VALUE")])
def test_cluster_option_names_a_bad_key_before_anything_starts(text: str, culprit: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=culprit):
        cluster_option(text)


def test_ideal_is_rounds_of_slots_and_none_for_trivial_tasks() -> None:
    assert ideal_seconds(100, 1.0, 16) == 7.0
    assert ideal_seconds(96, 1.0, 16) == 6.0
    assert ideal_seconds(1000, 0.0, 16) is None


def test_load_sampler_reports_the_highest_sample() -> None:
    start, high, end = LoadSampler(interval=0.01).stop()
    assert high >= start and high >= end


def test_render_gives_ratios_to_the_first_peer_and_names_failures() -> None:
    class Row:
        def __init__(self, peer: str, seconds: list[float], failures: list[str]) -> None:
            self.peer, self.workload, self.n = peer, "sleep", 100
            self.seconds, self.failures = seconds, failures
            self.submissions = [sacct.Submissions(2, 0, 0, 2)]
            self.loads = [(1.0, 3.5, 2.0)]

    lines = render([Row("remote_map", [10.0, 12.0, 14.0], []),
                    Row("dask-jobqueue", [6.0], []),
                    Row("submitit", [], ["TimeoutError: 3/100 | done"])], {"sleep": 7.0}, 16, 3)
    table = "\n".join(lines)
    assert "| 100 x sleep | remote_map | 12.00 (10.00-14.00) | 1.00 | 7 | 2 sbatch (2 jobs)" \
        in table
    assert "| dask-jobqueue | 6.00 | 0.50 |" in table
    assert "1.00 / 3.50 / 2.00" in table
    assert "TimeoutError: 3/100 / done" in table  # a "|" would break the table


def _wait_array_tasks(env: dict[str, str], array: str, n: int, timeout: float = 60.0) -> None:
    """Until accounting holds ``n`` finished tasks of ``array`` (slurmdbd records them late)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = [line for line in sacct.read_lines(env)
                 if line.submission == array and line.state in sacct.TERMINAL]
        if len(tasks) >= n:
            return
        assert time.monotonic() < deadline, f"array {array}: {tasks} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slurm
def test_submissions_counted_from_real_sacct(slurm_cluster: SingleNodeSlurm) -> None:
    env = {**os.environ, **slurm_cluster.client_env()}
    slurm_cluster.wait_job(slurm_cluster.sbatch("--wrap", "true"))
    mark = sacct.high_water(env)
    assert mark > 0
    plain = [slurm_cluster.sbatch("--wrap", "true") for _ in range(2)]
    array = slurm_cluster.sbatch("--array=0-2", "--wrap", "true")
    for job in plain:
        slurm_cluster.wait_job(job)
    _wait_array_tasks(env, array, 3)
    found = sacct.settled_count(env, mark, timeout=60)
    assert found == sacct.Submissions(sbatch_calls=3, arrays=1, array_tasks=3, jobs=5), array
