"""One judge of outcome files: ``protocol.open_outcome``, fed files the real worker wrote.

A batch worker (``python -m remotemap.worker run RUN --key-file PATH CHUNK...``, as a cluster
job runs it) writes the outcomes; each test then damages or misplaces one the way a crash, a
copy from another run or another user could, and checks the verdict: a result, missing,
tampered (nothing unpickled) or another run's. A workflow step reading its prerequisites
(``workflow.remote_step``) goes through the same judge, so it gives the same verdicts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import remotemap
from remotemap import protocol
from remotemap.errors import TamperedFile
from remotemap.execution import dumps
from remotemap.integrity import new_key, write_key_file
from remotemap.protocol import (
    FUNCTION,
    RunLayout,
    chunk_name,
    create_local_run_dir,
    encode_chunk,
    open_outcome,
    outcome_chunk_id,
    seal_file,
)
from remotemap.tasks import Chunk
from remotemap.workflow.remote_step import PrerequisiteUnavailable, prerequisite_value
from tests import taskfuncs as tf

KEY = new_key()
TOKEN = "this-run"


def worker_outcomes(tmp_path: Path, key: bytes = KEY, token: str = TOKEN,
                    values: tuple[int, ...] = (7, 8)) -> RunLayout:
    """A run directory whose chunk ``i`` squares ``values[i]``, run by the real batch worker;
    its outcome files are the worker's own."""
    layout, rundir = create_local_run_dir(str(tmp_path))
    rundir.write(FUNCTION, seal_file(key, FUNCTION, dumps(tf.square)))
    for i, value in enumerate(values):
        name = chunk_name(i)
        rundir.write(name, seal_file(key, name, encode_chunk(token, Chunk(i, [i], [(value,)],
                                                                         [{}]))))
    rundir.close()
    key_file = tmp_path / f"keys-{Path(layout.root).name}" / "run.key"
    write_key_file(str(key_file), key)
    done = subprocess.run(
        [sys.executable, "-m", "remotemap.worker", "run", layout.root, "--key-file",
         str(key_file), *(str(i) for i in range(len(values)))],
        capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return layout


def judge(layout: RunLayout, chunk_id: int, blob: bytes | None, key: bytes = KEY,
          token: str = TOKEN) -> object:
    """The verdict as a value: the result's values, None, or the refusal's message."""
    try:
        result = open_outcome(key, chunk_id, blob, token, layout.outcome(chunk_id))
    except TamperedFile as exc:
        return exc
    return None if result is None else (result.indices, result.values, result.failures)


def test_a_good_outcome_gives_its_result(tmp_path: Path) -> None:
    layout = worker_outcomes(tmp_path)
    assert judge(layout, 0, Path(layout.outcome(0)).read_bytes()) == ([0], [49], [])
    assert judge(layout, 1, Path(layout.outcome(1)).read_bytes()) == ([1], [64], [])


def test_a_missing_outcome_gives_no_result(tmp_path: Path) -> None:
    layout = worker_outcomes(tmp_path, values=(7,))
    assert not Path(layout.outcome(1)).exists()
    assert judge(layout, 1, None) is None


@pytest.mark.parametrize("keep", [100, 31, 0], ids=["cut-in-the-pickle", "cut-in-the-tag",
                                                    "empty"])
def test_a_truncated_outcome_is_tampered(tmp_path: Path, keep: int) -> None:
    layout = worker_outcomes(tmp_path, values=(7,))
    blob = Path(layout.outcome(0)).read_bytes()
    assert len(blob) > keep
    verdict = judge(layout, 0, blob[:keep])
    assert isinstance(verdict, TamperedFile)
    assert layout.outcome(0) in str(verdict)


def test_an_outcome_sealed_with_another_key_is_tampered(tmp_path: Path) -> None:
    other_key = new_key()
    layout = worker_outcomes(tmp_path, key=other_key, values=(7,))
    blob = Path(layout.outcome(0)).read_bytes()
    assert judge(layout, 0, blob, key=other_key) == ([0], [49], [])  # good for its own run
    verdict = judge(layout, 0, blob)
    assert isinstance(verdict, TamperedFile) and layout.outcome(0) in str(verdict)


def test_another_chunks_outcome_under_this_name_is_tampered(tmp_path: Path) -> None:
    layout = worker_outcomes(tmp_path)
    assert isinstance(judge(layout, 0, Path(layout.outcome(1)).read_bytes()), TamperedFile)


def test_an_outcome_with_another_runs_token_gives_no_result(tmp_path: Path) -> None:
    layout = worker_outcomes(tmp_path, token="earlier-run", values=(7,))
    blob = Path(layout.outcome(0)).read_bytes()
    assert judge(layout, 0, blob, token="earlier-run") == ([0], [49], [])
    assert judge(layout, 0, blob) is None


def test_a_workflow_step_reads_its_prerequisites_through_the_same_judge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = worker_outcomes(tmp_path / "good")
    foreign = worker_outcomes(tmp_path / "foreign", token="earlier-run", values=(7,))
    other_key = worker_outcomes(tmp_path / "other-key", key=new_key(), values=(7,))
    cut = Path(good.outcome(1))
    cut.write_bytes(cut.read_bytes()[:100])
    monkeypatch.setattr(protocol, "_worker_key", KEY)  # as the worker running the step has it
    assert prerequisite_value(3, good.outcome(0), TOKEN) == 49
    refusals = {
        good.outcome(1): "step 3's outcome was refused",
        other_key.outcome(0): "step 3's outcome was refused",
        foreign.outcome(0): "is not step 3's outcome in this run",
        good.outcome(5): "step 3's outcome cannot be read from",
        str(tmp_path / "good" / "notes.pkl"): "is not named as an outcome file",
    }
    for path, why in refusals.items():
        with pytest.raises(PrerequisiteUnavailable, match=why) as info:
            prerequisite_value(3, path, TOKEN)
        assert path in str(info.value)


def test_outcome_file_names_give_their_chunk() -> None:
    layout = RunLayout("/run")
    assert outcome_chunk_id(layout.outcome(7)) == 7
    assert outcome_chunk_id(layout.outcome(1234567)) == 1234567
    for other in ("/run/outcomes/7.pkl", "/run/outcomes/000007.pkl.tmp-5", "/run/notes.pkl"):
        assert outcome_chunk_id(other) is None


def test_only_the_judge_unpickles_an_outcome() -> None:
    """No module but protocol.py decodes outcome bytes itself: every reader calls the judge."""
    users = sorted(str(p.relative_to(Path(remotemap.__file__).parent))
                   for p in Path(remotemap.__file__).parent.rglob("*.py")
                   if "decode_outcome" in p.read_text())
    assert users == ["protocol.py"]
