"""Staging on a real single-node SLURM: inputs go through the submitting host's shared
directory (the run directory, ``RUN/staged``) and go with it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, Staged, remote_map, staged_path
from tests import cluster_support
from tests.cluster_support import wait_for

pytestmark = pytest.mark.slurm

# The shared fixtures, module-scoped per test module (see tests/cluster_support.py).
state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
slurm = cluster_support.slurm


def _read_both(path: str) -> tuple[str, str, str, str]:
    atlas = staged_path("atlas.txt")
    return path, Path(path).read_text(), atlas, Path(atlas).read_text()


def test_inputs_go_through_the_shared_directory(slurm: dict[str, Any], runs_dir: Path,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for i in range(3):
        (tmp_path / "data" / f"sub-{i}.txt").write_text(f"subject {i}")
    (tmp_path / "atlas.txt").write_text("atlas")
    args = [(Staged(f"data/sub-{i}.txt"),) for i in range(3)] + [(Staged("data/gone.txt"),)]
    with pytest.raises(RemoteException) as info:
        remote_map(_read_both, args, send=["atlas.txt"], tasks_per_job=2, **slurm)
    assert info.value.failed_indices == [3]  # the missing input fails its own task only
    assert str(tmp_path / "data" / "gone.txt") in info.value.failures[0].message
    runs = set()
    for i, (path, text, atlas, atlas_text) in enumerate(info.value.results[:3]):
        assert (text, atlas_text) == (f"subject {i}", "atlas")
        for staged, caller in ((path, tmp_path / f"data/sub-{i}.txt"),
                               (atlas, tmp_path / "atlas.txt")):
            relative = Path(staged).relative_to(runs_dir)  # a copy in the shared directory
            assert relative.parts[1] == "staged" and staged.endswith(str(caller))
            runs.add(runs_dir / relative.parts[0])
    assert len(runs) == 1
    # Gone with the run directory, which the engine removes once its jobs ended.
    wait_for("the run directory to go", lambda: not any(os.path.exists(r) for r in runs))


def _read_as(path: str) -> tuple[str, str, str]:
    import getpass

    return path, Path(path).read_text(), getpass.getuser()


@pytest.mark.ssh
def test_inputs_go_to_a_remote_submitting_host_over_ssh(
        swf: None, slurm_cluster: Any, sshd_host: Any, rmtest_can_submit: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a submitting host reached over SSH, whose user cannot read the caller's files:
    the inputs are copied over SFTP into the run directory in its shared directory."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # that host lacks the tests
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub.txt").write_text("subject")
    shared = f".cache/rm-staging-cluster-{os.getpid()}"
    options = {"mode": "cluster", "scheduler": "slurm", "host": sshd_host.alias,
               "ssh_config": str(sshd_host.ssh_config), "python": str(rmtest_can_submit),
               "slurm_conf": str(slurm_cluster.conf_path), "poll_interval": 0.5,
               "shared_dir": shared, "progress": False}
    home_runs = Path(sshd_host.user.home) / shared
    try:
        [(path, text, user)] = remote_map(_read_as, [(Staged("sub.txt"),)], **options)
        assert (text, user) == ("subject", "rmtest")  # read by the SSH user: the copy
        relative = Path(path).relative_to(home_runs)
        assert relative.parts[1] == "staged" and path.endswith(str(tmp_path / "sub.txt"))
        assert list(home_runs.iterdir()) == []  # gone with the run directory
    finally:
        shutil.rmtree(home_runs, ignore_errors=True)
