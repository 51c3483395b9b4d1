"""The config sections of the modes ``local`` and ``local_with_dumps``.

A light module (declarations only): the mode registry reads it to check a config file without
importing the backends, their process pools or loky.
"""

from __future__ import annotations

from remotemap.config.declarations import Key, Section

N_JOBS = Key("n_jobs", "int", 0, "worker processes; 0 or -1 = all usable CPUs, -2 = all but one")

#: local_with_dumps and ssh: the worker server's imports ahead of each fork (remotemap.worker).
PRELOAD = Key("preload", "bool", True,
              "the worker server imports the modules a chunk names before forking its process")

#: Every mode: inputs sent to where the tasks run (here, where tasks share this disk, the
#: files are already there: nothing is copied), and whether they stay there after the run.
STAGING = (
    Key("send", "list[str]", [], "files and directories every task needs, sent to each host "
        "once (relative = to the caller's directory); tasks find them with "
        "remotemap.staged_path"),
    Key("keep_staged", "bool", False,
        "keep the staged inputs on the hosts after the run, for later runs to reuse"),
)

LOCAL = Section(
    "local",
    "mode 'local': worker processes on this machine (loky, joblib's executor)",
    (N_JOBS, Key("chunksize", "int", 0, "tasks per worker batch; 0 = automatic", minimum=0),
     *STAGING),
)

LOCAL_WITH_DUMPS = Section(
    "local_with_dumps",
    "mode 'local_with_dumps': worker processes that exchange tasks through files",
    (
        N_JOBS,
        Key("keep_files", "bool", False, "keep the task and result files after the run"),
        Key("temp_dir", "str", "", "where the files go; empty = a private temp dir",
            is_path=True),
        PRELOAD,
        *STAGING,
    ),
)  # fmt: skip
