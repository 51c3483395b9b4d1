"""Where runs are indexed and named on disk: the places every earlier version used.

``remotemap.state`` gives the state home to stored runs, workflow runs and the CLI; these
tests spell the paths out in full (not through the functions under test), so a run stored by
an earlier version, whose index entry, key and records sit at exactly these places, is still
found.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remotemap import RemoteException, Workflow, remote_map
from remotemap.cli import main as cli_main
from remotemap.runs import RunStore, record_name, record_number
from remotemap.state import key_name
from tests import taskfuncs as tf


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def test_a_stored_run_keeps_its_index_entry_key_and_records_where_they_were(
        tmp_path: Path, state_home: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RemoteException):
        remote_map(tf.fail_on, [(1,), (2,)], mode="serial", run_dir=run)
    meta = json.loads((run / "run.json").read_text())
    link = state_home / "remotemap" / "runs" / meta["id"]
    assert link.is_symlink() and link.resolve() == run.resolve()
    assert (state_home / "remotemap" / "keys" / f"{meta['key']}.key").is_file()
    # Records are numbered by arrival, eight digits, as FORMAT 2 has always written them.
    assert sorted(p.name for p in (run / "outcomes").iterdir()) == ["00000000.pkl",
                                                                    "00000001.pkl"]
    assert RunStore.find(meta["id"]) == run.resolve()
    # A resumed call reads the records there (only the failed task runs again) and numbers its
    # own after them.
    with pytest.raises(RemoteException):
        remote_map(tf.fail_on, [(1,), (2,)], mode="serial", resume=run)
    assert sorted(p.name for p in (run / "outcomes").iterdir()) == [
        "00000000.pkl", "00000001.pkl", "00000002.pkl"]
    assert len(RunStore.existing(run).load().values) == 1


def test_record_names_and_numbers_are_inverse() -> None:
    assert record_name(3) == "outcomes/00000003.pkl"
    assert record_number(Path("RUN") / record_name(12345)) == 12345
    for other in ("00000003.pkl.tmp-42", "notes.pkl", "00000003.json", ".pkl"):
        assert record_number(Path(other)) is None


def test_key_files_are_named_by_the_base_name_of_the_id() -> None:
    assert key_name("20260101-000000-abcdef") == "20260101-000000-abcdef.key"
    # An id read back from a damaged or planted run file cannot name a file elsewhere.
    assert key_name("../../home/me/.ssh/id") == "id.key"


def test_workflow_runs_are_indexed_where_they_were(tmp_path: Path, state_home: Path) -> None:
    index = state_home / "remotemap" / "workflows"
    wf = Workflow("small")
    wf.add_step(str, 1)
    wf.run("serial")
    (report_only,) = list(index.iterdir())
    assert (report_only / "workflow.json").is_file() and not report_only.is_symlink()
    wf.run("serial", run_dir=tmp_path / "kept")
    report = json.loads((tmp_path / "kept" / "workflow.json").read_text())
    assert (index / report["id"]).resolve() == (tmp_path / "kept").resolve()
    assert (state_home / "remotemap" / "keys" / f"{report['key']}.key").is_file()


def test_the_cli_names_the_same_places(state_home: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["runs"]) == 0
    home = state_home / "remotemap"
    assert capsys.readouterr().out == (f"no stored runs in {home / 'runs'}, no workflow runs in "
                                       f"{home / 'workflows'}, no cluster runs in "
                                       f"{home / 'cluster'}\n")
    cli_main(["status", "--config", str(state_home / "none.toml")])  # its code: the modes'
    index = state_home / "remotemap" / "workflows"
    assert f"workflow runs: none yet (they are listed in {index})" in capsys.readouterr().out
