"""The config section of the mode ``dask``.

A light module (declarations only): checking a config file reads it without importing the
backend, dask or distributed.
"""

from __future__ import annotations

from remotemap.config.declarations import Key, Section

DASK = Section(
    "dask",
    "mode 'dask': tasks on the workers of a running dask.distributed scheduler",
    (
        Key("scheduler", "str", "", "the scheduler's address, e.g. tcp://127.0.0.1:8786 "
            "(required)"),
        Key("n_jobs", "int", 0, "chunks running at once; 0 = the cluster's threads when the "
            "run starts", minimum=0),
        Key("chunksize", "int", 0, "tasks per dask task; 0 = automatic", minimum=0),
        Key("connect_timeout", "float", 10.0, "seconds to reach the scheduler (or to reach it "
            "again) before giving up", minimum=0.1),
    ),
)  # fmt: skip
