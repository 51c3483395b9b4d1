"""Staging on a real single-node SLURM: inputs go through the submitting host's shared
directory (the run directory, ``RUN/staged``) and go with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from remotemap import RemoteException, Staged, remote_map, staged_path
from tests import cluster_support

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
    assert not any(os.path.exists(run) for run in runs)  # gone with the run directory
