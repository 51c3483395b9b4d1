"""Stored runs give back only results of this very call, load nothing another user could have
put there, and take one call at a time."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Generator
from pathlib import Path

import pytest

from remotemap import RemoteException, remote_imap, remote_map
from remotemap.errors import UnsafePath
from remotemap.locks import RunDirectoryBusy
from remotemap.runs import FunctionChanged, RunStore
from remotemap.state import state_dir
from tests import taskfuncs as tf
from tests.backends import Runner

#: The user the tests make "another user" (they run as root: see tests/ssh_fixtures.py).
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user: root only")


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs are indexed (and their keys kept) under a private state directory of the test."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def _counts(counters: Path) -> Counter[str]:
    return Counter(p.name.split(".")[0] for p in counters.iterdir())


class _Planted:
    """A pickle another user planted: loading it creates ``marker`` (it could run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Planted(marker)))


def _give_away(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)


# -- only results of this call ------------------------------------------------------------------


def test_a_stored_run_gives_back_only_results_of_this_call(runner: Runner, shared_dir: Path,
                                                           tmp_path: Path) -> None:
    counters, broken, run_dir = shared_dir / "counters", shared_dir / "broken", tmp_path / "r"
    counters.mkdir()
    counters.chmod(0o777)
    broken.touch()
    c = str(counters)
    with pytest.raises(RemoteException) as info:
        runner.map(tf.count_runs, [(c, 1, ""), (c, 2, str(broken)), (c, 3, "")], run_dir=run_dir)
    assert info.value.results == [10, None, 30]
    # The repro: new arguments in the same run_dir gave [10, 200, 30] (two stale).
    assert runner.map(tf.count_runs, [(c, 10), (c, 20), (c, 30)], run_dir=run_dir) == \
        [100, 200, 300]
    # One task changed, one added: only those two run; the others are reused.
    assert runner.map(tf.count_runs, [(c, 10), (c, 21), (c, 30), (c, 40)], run_dir=run_dir) == \
        [100, 210, 300, 400]
    # Fewer tasks: the ones left are matched by position and arguments, nothing runs.
    assert runner.map(tf.count_runs, [(c, 10), (c, 21)], run_dir=run_dir) == [100, 210]
    assert _counts(counters) == {str(x): 1 for x in (1, 2, 3, 10, 20, 30, 21, 40)}


def test_another_function_is_refused_unless_told_what_to_do(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    with pytest.raises(RemoteException):
        remote_map(tf.fail_on, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir)
    with pytest.raises(FunctionChanged, match=rf"{run_dir} holds 2 result\(s\) of "
                       r"tests\.taskfuncs\.fail_on, and this call's function is "
                       r"tests\.taskfuncs\.square\. .*function_changed='rerun'"):
        remote_map(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir)
    # keep: the old version's results stay for unchanged tasks; the failed one runs anew.
    assert remote_map(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir,
                      function_changed="keep") == [1, 4, 3]
    # ... and stay kept on the next resume, without being asked again.
    assert remote_map(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir) == [1, 4, 3]
    assert remote_map(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir,
                      function_changed="rerun") == [1, 4, 9]
    with pytest.raises(ValueError, match="function_changed must be one of"):
        remote_map(tf.square, [(1,)], mode="serial",  # type: ignore[call-overload]
                   run_dir=run_dir, function_changed="yes")


def test_a_changed_function_with_only_failures_stored_just_runs(tmp_path: Path) -> None:
    with pytest.raises(RemoteException):
        remote_map(tf.fail_on, [(2,)], mode="serial", run_dir=tmp_path / "r")
    assert remote_map(tf.square, [(2,)], mode="serial", run_dir=tmp_path / "r") == [4]


# -- nothing loaded from a place another user controls ------------------------------------------


@as_root
def test_a_run_directory_of_another_user_is_never_loaded(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "theirs", tmp_path / "pwned"
    with pytest.raises(RemoteException):  # a genuine run, with this user's key ...
        remote_map(tf.fail_on, [(1,), (2,)], mode="serial", run_dir=run_dir)
    for name in ["function.pkl", "tasks.pkl", *(f"outcomes/{p.name}" for p in
                                                (run_dir / "outcomes").iterdir())]:
        _plant(run_dir / name, marker)  # ... then taken over by another user
    _give_away(run_dir)
    owner = rf"refusing to use {run_dir}: {run_dir} is owned by uid {NOBODY} \(nobody\)"
    with pytest.raises(UnsafePath, match=owner):
        remote_map(tf.fail_on, [(1,), (2,)], mode="serial", run_dir=run_dir)
    with pytest.raises(UnsafePath, match=owner):
        remote_map(tf.fail_on, [(1,), (2,)], mode="serial", resume=run_dir)
    retry = _cli("retry", str(run_dir))
    assert retry.returncode == 1 and f"is owned by uid {NOBODY}" in retry.stderr
    assert not marker.exists()


@as_root
def test_no_run_directory_is_made_where_others_could_swap_it(tmp_path: Path) -> None:
    open_dir, sticky = tmp_path / "open", tmp_path / "sticky"
    for path, mode in ((open_dir, 0o777), (sticky, 0o1777)):
        path.mkdir()
        path.chmod(mode)
    with pytest.raises(UnsafePath, match=rf"{open_dir} can be written by others \(mode 0777\)"):
        remote_map(tf.square, [(1,)], mode="serial", run_dir=open_dir / "run")
    assert not (open_dir / "run").exists()
    assert remote_map(tf.square, [(3,)], mode="serial", run_dir=sticky / "run") == [9]
    theirs = tmp_path / "theirs"  # an empty directory another user made for us
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match=f"owned by uid {NOBODY}"):
        remote_map(tf.square, [(1,)], mode="serial", run_dir=theirs)
    assert list(theirs.iterdir()) == []
    under_theirs = theirs / "run"  # a directory made in theirs: they could swap it
    with pytest.raises(UnsafePath, match=f"{theirs} is owned by uid {NOBODY}"):
        remote_map(tf.square, [(1,)], mode="serial", run_dir=under_theirs)
    assert not under_theirs.exists()


def test_a_tampered_outcome_is_not_unpickled_and_its_tasks_rerun(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    counters, run_dir, marker = tmp_path / "counters", tmp_path / "r", tmp_path / "pwned"
    counters.mkdir()
    largs = [(str(counters), i) for i in range(3)]
    assert remote_map(tf.count_runs, largs, mode="serial", run_dir=run_dir) == [0, 10, 20]
    outcomes = sorted((run_dir / "outcomes").iterdir())
    for path in outcomes:
        _plant(path, marker)
    with caplog.at_level(logging.WARNING, logger="remotemap"):
        assert remote_map(tf.count_runs, largs, mode="serial", run_dir=run_dir) == [0, 10, 20]
    assert not marker.exists()
    assert f"{outcomes[0]} failed its integrity check" in caplog.text
    assert _counts(counters) == {"0": 2, "1": 2, "2": 2}


def test_retry_refuses_a_tampered_function(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "r", tmp_path / "pwned"
    with pytest.raises(RemoteException):
        remote_map(tf.fail_on, [(2,)], mode="serial", run_dir=run_dir)
    _plant(run_dir / "function.pkl", marker)
    retry = _cli("retry", str(run_dir))
    assert retry.returncode == 1
    assert f"{run_dir / 'function.pkl'} failed its integrity check" in retry.stderr
    assert not marker.exists()


def test_a_run_without_its_key_or_of_an_older_format_is_refused(tmp_path: Path) -> None:
    for name in ("keyless", "older"):
        with pytest.raises(RemoteException):
            remote_map(tf.fail_on, [(2,)], mode="serial", run_dir=tmp_path / name)
    meta = RunStore.existing(tmp_path / "keyless").meta()
    (state_dir("keys") / f"{meta['key']}.key").unlink()
    with pytest.raises(ValueError, match=rf"the key of the run stored in {tmp_path / 'keyless'}"
                                         rf" is not in {state_dir('keys')}"):
        remote_map(tf.fail_on, [(2,)], mode="serial", run_dir=tmp_path / "keyless")
    old = tmp_path / "older" / "run.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items()
                               if k != "format"}))
    with pytest.raises(ValueError, match="stored by an older remotemap"):
        remote_map(tf.fail_on, [(2,)], mode="serial", run_dir=tmp_path / "older")


@as_root
def test_the_index_of_runs_follows_no_link_of_another_user(tmp_path: Path,
                                                          state_home: Path) -> None:
    theirs, marker = tmp_path / "theirs", tmp_path / "pwned"
    with pytest.raises(RemoteException):
        remote_map(tf.fail_on, [(2,)], mode="serial", run_dir=theirs)
    for path in (theirs / "outcomes").iterdir():
        _plant(path, marker)
    _give_away(theirs)
    index = state_home / "remotemap" / "runs"
    (index / "planted").symlink_to(theirs)
    os.lchown(index / "planted", NOBODY, NOBODY)
    (index / "mine").symlink_to(theirs)  # a link of this user's to a directory gone foreign
    for run in ("planted", "mine"):
        retry = _cli("retry", run)
        assert retry.returncode == 1 and f"owned by uid {NOBODY}" in retry.stderr, retry.stderr
    listed = _cli("runs")
    assert listed.returncode == 0 and "skipping the stored run" in listed.stderr
    assert not marker.exists()
    index.chmod(0o777)  # an index others could write to is not read at all
    listed = _cli("runs")
    assert listed.returncode == 1 and f"{index} can be written by others" in listed.stderr


# -- one call at a time -------------------------------------------------------------------------

BUSY_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from remotemap import remote_map

    def task(counter_dir, i):
        Path(counter_dir, f"{i}.{os.getpid()}").touch()
        time.sleep(0.05)
        return i

    counter_dir, run_dir = sys.argv[1:3]
    print(remote_map(task, [(counter_dir, i) for i in range(60)], mode="serial",
                     run_dir=run_dir, progress=False) == list(range(60)))
    """
)


def test_two_processes_on_one_run_dir_run_each_task_once(tmp_path: Path) -> None:
    counters, script = tmp_path / "counters", tmp_path / "job.py"
    counters.mkdir()
    script.write_text(BUSY_SCRIPT)
    argv = [sys.executable, str(script), str(counters), str(tmp_path / "run")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    ended = [(proc.pid, *proc.communicate(timeout=120), proc.returncode) for proc in procs]
    ran = [e for e in ended if e[3] == 0]
    refused = [e for e in ended if e[3] != 0]
    assert len(ran) == 1 and len(refused) == 1, ended
    assert ran[0][1].strip() == "True"
    assert "RunDirectoryBusy" in refused[0][2]
    assert f"{tmp_path / 'run'} is in use by process {ran[0][0]} on " in refused[0][2]
    assert _counts(counters) == {str(i): 1 for i in range(60)}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remotemap", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ})


def test_retry_after_the_function_s_module_changed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``remotemap retry`` loads the stored function: one stored by reference comes back as
    the module's current code, which is then not the code that made the stored results."""
    (tmp_path / "analysis.py").write_text("def f(x):\n    if x == 2:\n        raise ValueError\n"
                                          "    return x * 10\n")
    store = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from analysis import f
        from remotemap import remote_map
        remote_map(f, [(1,), (2,), (3,)], mode="serial", run_dir={str(tmp_path / 'r')!r})
        """)
    first = subprocess.run([sys.executable, "-c", store], capture_output=True, text=True,
                           timeout=60)
    assert "1 of 3 tasks failed" in first.stderr
    (tmp_path / "analysis.py").write_text("def f(x):\n    return x * 100\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # where `retry` finds analysis
    refused = _cli("retry", str(tmp_path / "r"))
    assert refused.returncode == 1
    assert "holds 2 result(s) of another version of analysis.f" in refused.stderr
    kept = _cli("retry", str(tmp_path / "r"), "--function-changed", "keep")
    assert kept.returncode == 0, kept.stderr
    assert RunStore.existing(tmp_path / "r").load().values == {0: 10, 1: 200, 2: 30}


def test_the_lock_is_held_while_the_call_goes_on_and_no_longer(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    results = remote_imap(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir)
    assert isinstance(results, Generator) and next(results) == (0, 1)
    with pytest.raises(RunDirectoryBusy, match=rf"{run_dir} is in use by process {os.getpid()}"):
        remote_map(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir)
    results.close()  # leaving the loop early ends the call
    assert remote_map(tf.square, [(1,), (2,), (3,)], mode="serial", run_dir=run_dir) == [1, 4, 9]


def test_stored_records_keep_their_indices_as_lists(tmp_path: Path) -> None:
    # Consecutive chunks carry their indices as a range in this process; a run directory may
    # be read by another version, so what is stored stays what every version stored: a list.
    run_dir = tmp_path / "run"
    assert remote_map(tf.square, [(i,) for i in range(40)], mode="local", n_jobs=2,
                      chunksize=10, run_dir=str(run_dir), progress=False) == \
        [i * i for i in range(40)]
    results = [record["result"] for record in RunStore.existing(run_dir).outcomes()]
    assert results and all(type(result.indices) is list for result in results)
    assert sorted(i for result in results for i in result.indices) == list(range(40))
