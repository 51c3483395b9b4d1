"""Errors that show the user's code and say the fix: the user's frame in a failure's summary,
"did you mean" for every unknown option, mode and config key, another mode's options ignored
with a warning, ``n_jobs=None``, and a config typo that stops only the runs using its section."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from remotemap import Executor, ModeName, RemoteException, remote_map
from remotemap.cli import main as cli_main
from remotemap.errors import ConfigError, TaskFailure
from tests import taskfuncs as tf

HERE = Path(__file__).name


def invert_singular(x: int) -> object:
    return np.linalg.inv(np.zeros((2, 2)))  # the user's line the summary must show


def pid(x: int) -> int:
    return os.getpid()


# --- the user's frame in str(RemoteException) ------------------------------------------------


@pytest.mark.parametrize("mode", ["serial", "local"])
def test_summary_shows_the_users_frame_and_the_last(mode: str) -> None:
    with pytest.raises(RemoteException) as info:
        remote_map(invert_singular, [(1,)], mode=ModeName(mode), progress=False)
    text = str(info.value)
    lines = text.splitlines()
    user = next(i for i, line in enumerate(lines) if f'{HERE}", line' in line)
    assert "in invert_singular" in lines[user]
    assert "np.linalg.inv(np.zeros((2, 2)))" in lines[user + 1]
    elided = next(i for i, line in enumerate(lines) if "not shown" in line)
    assert user < elided and "in numpy" in lines[elided]
    last = [i for i, line in enumerate(lines) if 'File "' in line][-1]
    assert elided < last and "numpy" in lines[last]
    assert lines[-1].strip() == "numpy.linalg.LinAlgError: Singular matrix"
    # the full traceback is still there
    assert "_linalg.py" in info.value.failures[0].traceback


def test_summary_reads_a_remote_hosts_paths() -> None:
    trace = "\n".join([
        "Traceback (most recent call last):",
        '  File "/home/ana/project/analysis.py", line 12, in fit',
        "    return solve(matrix)",
        '  File "/opt/venv/lib/python3.9/site-packages/scipy/linalg/_basic.py", line 9, in s',
        "    check(a)",
        '  File "/usr/lib/python3.9/json/decoder.py", line 5, in check',
        "    raise ValueError(a)",
        "ValueError: bad",
    ])
    summary = TaskFailure(3, "ValueError", "bad", trace, host="node1").summary()
    assert "analysis.py\", line 12, in fit" in summary
    assert "return solve(matrix)" in summary
    assert "... 1 frame in scipy not shown" in summary
    assert "json/decoder.py" in summary and "ValueError: bad" in summary


def test_summary_of_a_failure_in_the_users_code_is_its_tail() -> None:
    trace = "\n".join(["Traceback (most recent call last):",
                       '  File "/home/ana/a.py", line 1, in f', "    g()",
                       '  File "/home/ana/b.py", line 2, in g', "    raise KeyError(1)",
                       "KeyError: 1"])
    summary = TaskFailure(0, "KeyError", "1", trace).summary()
    assert "a.py" in summary and "b.py" in summary and "not shown" not in summary


# --- unknown options, modes, config keys ------------------------------------------------------


@pytest.mark.parametrize(("mode", "given", "meant"), [
    ("local", "timout", "'timeout'"),
    ("local", "workers", "'n_jobs'"),
    ("local", "processes", "'n_jobs'"),
    ("local", "max_workers", "'n_jobs'"),
    ("local", "N_JOBS", "'n_jobs'"),
    ("cluster", "partition", "'queue'"),
    ("cluster", "time", "'walltime'"),
    ("cluster", "time_limit", "'walltime'"),
    ("cluster", "mem", "'memory'"),
    ("cluster", "ncpus", "'cpus_per_task'"),
    ("local", "partition", "'queue', an option of cluster"),
])
def test_unknown_option_says_what_was_meant(mode: str, given: str, meant: str) -> None:
    with pytest.raises(TypeError) as info:
        options: dict[str, Any] = {given: 1}
        remote_map(pid, [(1,)], mode=ModeName(mode), **options)
    message = str(info.value)
    assert f"unknown option {given!r} for {mode!r} (did you mean {meant}?)" in message
    assert "common options: timeout, retries" in message


def test_executor_lists_its_own_common_options() -> None:
    with pytest.raises(TypeError, match=r"did you mean 'timeout'.*common options: max_workers"):
        Executor(ModeName("local"), timout=1)


@pytest.mark.parametrize(("given", "meant"), [
    ("LAN", "ssh"), ("remote", "ssh"), ("hosts", "ssh"),
    ("slurm", "cluster"), ("pbs", "cluster"), ("sge", "cluster"), ("hpc", "cluster"),
    ("processes", "local"), ("multiprocessing", "local"), ("loky", "local"),
    ("joblib", "local"), ("debug", "serial"), ("sequential", "serial"), ("lcoal", "local"),
])
def test_unknown_mode_says_which_mode(given: str, meant: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown mode {given!r}.*did you mean {meant!r}"):
        remote_map(pid, [(1,)], mode=ModeName(given))


def test_config_set_of_a_misspelt_key_says_what_was_meant(
        isolated_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["config", "set", "local.n_job", "4"]) != 0
    assert "did you mean 'local.n_jobs'?" in capsys.readouterr().err
    assert cli_main(["config", "set", "cluster.partition", "debug"]) != 0
    assert "did you mean 'cluster.queue'?" in capsys.readouterr().err
    assert cli_main(["config", "set", "lcoal.n_jobs", "4"]) != 0
    assert "did you mean 'local'?" in capsys.readouterr().err


def test_file_validation_names_the_synonym(isolated_config: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _write_config(isolated_config, "[cluster]\npartition = 'debug'\n")
    assert cli_main(["config", "validate"]) != 0
    assert "unknown key 'cluster.partition'" in capsys.readouterr().err


# --- options of other modes, None, config sections a run does not use --------------------------


def test_another_modes_options_are_ignored_with_one_warning() -> None:
    with pytest.warns(UserWarning) as caught:
        assert remote_map(pid, [(1,)], mode="serial", n_jobs=4, chunksize=2) == [os.getpid()]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "mode 'serial' ignores" in message and "n_jobs" in message and "chunksize" in message
    assert caught[0].filename == __file__  # it points at the call
    with pytest.raises(TypeError, match=r"'n_jbos' for 'serial' \(did you mean 'n_jobs', an "):
        remote_map(pid, [(1,)], mode=ModeName("serial"), n_jbos=4)


def test_n_jobs_none_means_the_configured_value(isolated_config: Path) -> None:
    _write_config(isolated_config, "[local]\nn_jobs = 1\nchunksize = 1\n")
    spans = remote_map(tf.busy_span, [(i, 0.1) for i in range(4)], mode="local", n_jobs=None,
                       progress=False)
    # One task at a time (a first chunk may run in a forked child, then the pool's worker).
    assert tf.most_at_once(spans) == 1 and os.getpid() not in {p for p, _, _ in spans}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # None asks for nothing: serial has nothing to ignore
        assert remote_map(pid, [(1,)], mode="serial", n_jobs=None) == [os.getpid()]


def test_a_typo_in_a_section_the_run_does_not_use_is_a_warning(isolated_config: Path) -> None:
    _write_config(isolated_config, "[cluster]\nparttion = 'debug'\n[local]\nn_jobs = 1\n")
    with pytest.warns(UserWarning, match=r"\[cluster\].*'cluster.parttion'.*did you mean"):
        assert remote_map(pid, [(1,)], mode="serial") == [os.getpid()]
    with pytest.raises(ConfigError, match=r"'cluster.parttion'.*did you mean 'queue'"):
        remote_map(pid, [(1,)], mode="cluster")
    # `config validate` still refuses the file
    assert cli_main(["config", "validate"]) != 0


def test_a_typo_in_the_used_section_fails(isolated_config: Path) -> None:
    _write_config(isolated_config, "[remotemap]\nmode = 'local'\n[local]\nn_job = 2\n")
    with pytest.raises(ConfigError, match=r"'local.n_job'.*did you mean 'n_jobs'"):
        remote_map(pid, [(1,)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing else is wrong: no warning for [local] either
        with pytest.raises(ConfigError, match=r"local\.n_job"):
            Executor("local")


def _write_config(home: Path, text: str) -> None:
    (home / "remotemap").mkdir(exist_ok=True)
    (home / "remotemap" / "config.toml").write_text(text)
