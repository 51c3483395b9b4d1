"""The types of what a call may ask for: mode names and options, for type checkers.

``remote_map``, ``remote_imap`` and ``Executor`` are overloaded on these, so that a type
checker catches ``mode="lcoal"`` or ``n_jobs="four"`` before anything runs; at run time the
same arguments are checked again (``config.settings_for``, ``driver.make_policy``), with
messages that name the culprit.

- :data:`Mode`: the built-in modes, spelt out; a misspelt one is refused.
- :data:`ModeName`: any other mode name, checked only at run time: a plug-in's mode
  (``mode=ModeName("threads")``), or a name read from a file or a command line. It is a
  ``NewType`` of ``str``, so a bare string is not one: the type checker cannot tell a typo from
  a plug-in, so the caller says which it means. Calls with a ``ModeName`` take any keyword
  option (a plug-in's section is not known to the type checker).
- :class:`BuiltinModeOptions`: every option of the built-in modes' config sections, typed as
  the section declares it (``tests/test_typed_api.py`` checks the two agree); those in
  :data:`NONE_MEANS_CONFIGURED` also take None, the configured value.

Nothing here is imported at run time by the worker; the module holds declarations only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, NewType, TypedDict

if TYPE_CHECKING:
    from remotemap.config import Config

#: remotemap's own modes (``remotemap.config.modes.BUILTIN_MODES``).
Mode = Literal["serial", "local", "local_with_dumps", "ssh", "cluster"]
#: A mode name checked only at run time (a plug-in's, or one read from a file).
ModeName = NewType("ModeName", str)
#: What a run does after a task's final failure.
OnError = Literal["continue", "stop"]
#: What a resumed run does when the function is not the one its stored results came from.
WhenFunctionChanged = Literal["error", "rerun", "keep"]
#: ``ssh`` and ``cluster``: what to do with a host key not yet known.
HostKeyPolicy = Literal["reject", "accept-new"]
#: ``cluster``: who runs the jobs.
Scheduler = Literal["local", "slurm", "pbspro", "drmaa"]
#: How mode ``cluster`` sends tasks to jobs (``cluster.dispatch``).
Dispatch = Literal["auto", "jobs", "workers"]

PathLike = str | os.PathLike[str]

#: Options typed ``X | None``: None means the config's value (any option does at run time, see
#: ``Config.settings_for``; these are the ones where callers are used to passing None).
NONE_MEANS_CONFIGURED = frozenset({"n_jobs"})


class TaskSettings(TypedDict, total=False):
    """What applies to every task, whatever runs it."""

    timeout: float | None
    retries: int
    backoff: float
    env: Mapping[str, str] | None
    #: Show what tasks print during the run (None: the config's ``remotemap.stream_output``).
    stream_output: bool | None


class RunSettings(TypedDict, total=False):
    """What a ``remote_map``/``remote_imap`` run takes besides its tasks' settings."""

    progress: bool | None
    on_error: OnError
    run_dir: PathLike | None
    resume: PathLike | None
    function_changed: WhenFunctionChanged


class BuiltinModeOptions(TypedDict, total=False):
    """The keys of the built-in modes' config sections, as per-call options (a key a mode
    does not have is refused at run time, naming the mode and its valid options)."""

    config: Config | PathLike | None
    # local, local_with_dumps, ssh; None: the configured value, as joblib's n_jobs=None
    n_jobs: int | None
    chunksize: int
    # every mode with a section: inputs sent to where the tasks run
    send: list[str]
    keep_staged: bool
    # local_with_dumps, ssh
    preload: bool
    # local_with_dumps, cluster
    keep_files: bool
    temp_dir: PathLike
    # ssh, cluster: reaching hosts
    hosts: list[str]
    host: str
    user: str
    port: int
    key_file: PathLike
    known_hosts: PathLike
    ssh_config: PathLike
    host_key_policy: HostKeyPolicy
    connect_timeout: float
    python: str
    # ssh
    remote_dir: str
    keep_remote_files: bool
    keep_alive: float
    fetch: list[str]
    fetch_dir: PathLike
    stage_dir: str
    # cluster
    scheduler: Scheduler
    queue: str
    walltime: str
    memory: str
    cpus_per_task: int
    native_options: list[str]
    shared_dir: str
    tasks_per_job: int
    dispatch: Dispatch
    worker_jobs: int
    worker_slots: int
    slurm_conf: str
    poll_interval: float


class MapOptions(TaskSettings, RunSettings, BuiltinModeOptions, total=False):
    """``remote_map``/``remote_imap`` on a built-in mode (or the config's mode)."""

    #: None: no executor (so ``executor=maybe_pool``, typed ``Executor | None``, type-checks).
    executor: None


class MapOnExecutorOptions(TaskSettings, RunSettings, total=False):
    """``remote_map``/``remote_imap`` on a ``concurrent.futures`` executor."""


class ExecutorOptions(TaskSettings, BuiltinModeOptions, total=False):
    """``Executor`` on a built-in mode (or the config's mode)."""

    executor: None
