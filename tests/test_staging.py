"""Staging inputs where tasks share this disk (serial, local, local_with_dumps): the same API as
over SSH, and the identity: a ``Staged`` argument is the file's absolute path, ``staged_path``
finds a ``send`` file under its relative name, and a missing input fails its task alone."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remotemap import Mode, RemoteException, Staged, remote_map, staged_path
from remotemap.staged import replace_staged

LOCAL_MODES = ["serial", "local", "local_with_dumps"]


def _read(path: Any) -> tuple[str, str, str]:
    return type(path).__name__, os.fspath(path), Path(path).read_text()


def _read_sent(name: str) -> str:
    return Path(staged_path(name)).read_text()


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for i in range(3):
        (tmp_path / "data" / f"sub-{i}.txt").write_text(f"subject {i}")
    (tmp_path / "atlas.txt").write_text("atlas")
    return tmp_path


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_a_staged_argument_is_the_absolute_path_here(mode: Mode, data: Path) -> None:
    args = [(Staged(f"data/sub-{i}.txt"),) for i in range(2)] + [(Staged(Path("atlas.txt")),)]
    got = remote_map(_read, args, mode=mode, progress=False)
    assert got == [("str", str(data / f"data/sub-{i}.txt"), f"subject {i}") for i in range(2)] \
        + [("PosixPath", str(data / "atlas.txt"), "atlas")]


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_send_files_are_found_by_their_relative_names(mode: Mode, data: Path) -> None:
    options: dict[str, Any] = {} if mode == "serial" else {"send": ["atlas.txt", "data"]}
    got = remote_map(_read_sent, [("atlas.txt",), ("data/sub-2.txt",)], mode=mode,
                     progress=False, **options)
    assert got == ["atlas", "subject 2"]


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_a_missing_input_fails_its_task_only_naming_the_path(mode: Mode, data: Path) -> None:
    args = [(Staged("data/sub-0.txt"),), (Staged("data/nope.txt"),), (Staged("data/sub-1.txt"),)]
    with pytest.raises(RemoteException) as info:
        remote_map(_read, args, mode=mode, progress=False)
    assert info.value.failed_indices == [1]
    assert str(data / "data" / "nope.txt") in info.value.failures[0].message
    assert info.value.results[2] == ("str", str(data / "data/sub-1.txt"), "subject 1")


def test_staged_path_names_what_was_not_sent(data: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.txt was not staged"):
        staged_path("nope.txt")


def test_the_marker_pickles_and_is_replaced_inside_containers(data: Path) -> None:
    marker = Staged(Path("data/sub-0.txt"))
    again = pickle.loads(pickle.dumps(marker))
    assert again == marker and again.as_path and os.fspath(again) == str(data / "data/sub-0.txt")
    value = {"a": [marker, 1], "b": (2, {"c": marker})}
    replaced = replace_staged(value, lambda s: "X")
    assert replaced == {"a": ["X", 1], "b": (2, {"c": "X"})}
    untouched = {"a": [1, 2]}
    assert replace_staged(untouched, lambda s: "X") is untouched


def test_local_workers_started_elsewhere_find_sent_files_by_the_callers_names(
        data: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """loky's workers keep the directory they started in: start them in another one first."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert remote_map(os.getcwd, [(), ()], mode="local", n_jobs=2, progress=False)
    monkeypatch.chdir(data)
    got = remote_map(_read_sent, [("atlas.txt",), ("data/sub-2.txt",)], mode="local", n_jobs=2,
                     send=["atlas.txt", "data"], progress=False)
    assert got == ["atlas", "subject 2"]


def test_workers_look_for_markers_only_once_one_was_made_or_unpickled(data: Path) -> None:
    # A fresh interpreter: importing the module (local.py does, for a constant) is not a
    # marker; unpickling one is, and run_chunk then resolves it (it would otherwise reach the
    # function as a Staged, not a path).
    marker = pickle.dumps(Staged(str(data / "atlas.txt")))
    code = (
        "import pickle, sys\n"
        "from remotemap.staged import Staged\n"
        "from remotemap.execution import run_chunk\n"
        "from remotemap.tasks import Chunk\n"
        "before = Staged.made\n"
        "args = pickle.loads(sys.stdin.buffer.read())\n"
        "result = run_chunk(lambda p: type(p).__name__ + ':' + str(p), "
        "Chunk(0, [0], [(args,)], [{}]))\n"
        "print(before, Staged.made, result.values[0])\n")
    out = subprocess.run([sys.executable, "-c", code], input=marker, capture_output=True,
                         check=True).stdout.decode().split()
    assert out == ["False", "True", f"str:{data / 'atlas.txt'}"]
