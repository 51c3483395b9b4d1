"""Task functions the tests send to workers (importable by workers; no pytest import here)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any


def foo(a: int, b: int = 2) -> int:
    return a + b


def add(a: int, b: int) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def square(x: int) -> int:
    return x * x


def echo_args(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def fail_on(x: int, bad: tuple[int, ...] = (2,)) -> int:
    if x in bad:
        raise ValueError(f"bad value {x}")
    return x


class CustomError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code


def raise_custom(x: int) -> int:
    raise CustomError(x, "custom detail")


def crash_on(x: int, how: str = "exit") -> int:
    """Kill this process in one of the ways real tasks die."""
    if x == 3:
        if how == "exit":
            os._exit(3)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "segfault":
            ctypes.string_at(0)
    return x


def return_lock(x: int) -> Any:
    return threading.Lock() if x == 1 else x


def touch_then_fail(marker_dir: str, x: int, fail_at: int = 0) -> int:
    Path(marker_dir, f"{x}.ran").touch()
    if x == fail_at:
        raise RuntimeError("first task fails")
    time.sleep(0.02)
    return x


def noisy(x: int) -> int:
    print("stdout noise", x, "ready 1 2 3", flush=True)
    print("done 5 exit:0")
    os.write(1, b"raw fd noise\n")
    return x


def pid_and_sleep(path: str, x: int, seconds: float) -> int:
    """Write this process's pid to ``path``.x, then sleep (so a test can kill it)."""
    Path(f"{path}.{x}.tmp").write_text(str(os.getpid()))
    os.replace(f"{path}.{x}.tmp", f"{path}.{x}")
    time.sleep(seconds)
    return x


def array_sum(a: Any) -> float:
    return float(a.sum())


def hostname_after(x: int, seconds: float = 0.0) -> tuple[int, str]:
    """``x`` and the host that ran it, after ``seconds`` of sleep."""
    time.sleep(seconds)
    return x, socket.gethostname()


def byte_sum(b: bytearray) -> int:
    return len(b) * b[0] if b[0] == b[-1] else -1


def system_exit(x: int) -> int:
    raise SystemExit(f"task {x} called exit")


def fail_until(counter_dir: str, x: int, failures: int) -> int:
    """Fail the first ``failures`` attempts of task ``x`` (attempts counted in files)."""
    attempt = len(list(Path(counter_dir).glob(f"{x}.*"))) + 1
    Path(counter_dir, f"{x}.{attempt}").touch()
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} of task {x} fails")
    return attempt


def sleep_for(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def allocate_beyond(limit_mb: int) -> int:
    """Cap this process's address space, then ask for more than the cap."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    block = bytearray(2 * limit_mb << 20)
    return len(block)


def count_runs(counter_dir: str, x: int, fail_if_exists: str = "", seconds: float = 0.0) -> int:
    """Record that task ``x`` ran (then sleep ``seconds``); fail while the file
    ``fail_if_exists`` exists."""
    Path(counter_dir, f"{x}.{os.getpid()}.{time.monotonic_ns()}").touch()
    time.sleep(seconds)
    if fail_if_exists and os.path.exists(fail_if_exists):
        raise RuntimeError(f"task {x} fails while {fail_if_exists} exists")
    return x * 10


def allocate_in_cgroup(procs_file: str, x: int) -> int:
    """Task ``x`` == 1 joins the memory-limited cgroup whose ``cgroup.procs`` is given, then
    allocates past its limit: the kernel's OOM killer ends the process with SIGKILL."""
    if x == 1:
        Path(procs_file).write_text(str(os.getpid()))
        block = bytearray(512 << 20)
        return len(block)
    return x


def fail_to_load(why: str) -> Any:
    """Called by pickle when loading an :class:`Unloadable`: it raises instead."""
    raise RuntimeError(f"refusing to load: {why}")


class Unloadable:
    """Pickles anywhere; loading it raises (a ``__reduce__`` whose callable raises)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return fail_to_load, ("an Unloadable",)


class ExitOnPickle:
    """Pickling it raises ``SystemExit`` (as a ``__reduce__`` calling ``sys.exit`` would)."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise SystemExit("exit while pickled")


def odd_value_on(x: int, what: str, bad: int = 1) -> Any:
    """``x``, except for task ``bad``: an object that will not load ("unloadable") or will not
    pickle ("exit_on_pickle")."""
    if x != bad:
        return x
    return Unloadable() if what == "unloadable" else ExitOnPickle()


def foreign_object_on(directory: str, x: int, bad: int = 1) -> Any:
    """For task ``bad``, an instance of a class from a module written to ``directory`` and
    imported here only: a caller elsewhere cannot find that class."""
    if x != bad:
        return x
    import importlib
    import sys

    name = f"remotemap_foreign_{os.getpid()}_{x}"
    Path(directory, f"{name}.py").write_text("class Foreign:\n    pass\n")
    sys.path.insert(0, directory)
    try:
        return importlib.import_module(name).Foreign()
    finally:
        sys.path.remove(directory)


def raise_base_on(x: int, kind: str, bad: int = 1) -> int:
    """Task ``bad`` raises the BaseException named ``kind`` (KeyboardInterrupt, ...)."""
    if x == bad:
        import builtins

        raise getattr(builtins, kind)(f"task {x} raised {kind}")
    return x


class BadStr(Exception):
    def __str__(self) -> str:
        raise ValueError("__str__ of BadStr fails")


def raise_bad_str_on(x: int, bad: int = 1) -> int:
    if x == bad:
        raise BadStr("never shown")
    return x


def start_child(x: int) -> int:
    """Start a long ``sleep`` that this task never waits for; return its pid."""
    import subprocess

    return subprocess.Popen(["sleep", "300"]).pid


def close_stdio(how: str) -> int:
    """Close this process's stdout or stderr the way ``how`` says; return the pid."""
    import sys

    if how == "sys.stdout":
        sys.stdout.close()
    elif how == "sys.stderr":
        sys.stderr.close()
    else:
        os.close(int(how.removeprefix("fd")))
    return os.getpid()


def print_pid(x: int) -> int:
    """Print to stdout and stderr (flushed, so a closed one fails here); return the pid."""
    import sys

    print("task", x, "prints", flush=True)
    print("task", x, "warns", file=sys.stderr, flush=True)
    return os.getpid()


def remove_contents_on(directory: str, x: int, bad: int = 2) -> int:
    """Task ``bad`` removes everything in ``directory`` (a run's temp_dir, say)."""
    if x == bad:
        import shutil

        for entry in Path(directory).iterdir():
            shutil.rmtree(entry, ignore_errors=True)
    return x


def block_of(x: int, size: int) -> bytes:
    """``size`` bytes (a result that takes room on disk)."""
    return bytes([x % 256]) * size


class ExitOnPickleError(Exception):
    """An exception that cannot itself cross a process boundary: pickling it exits."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise SystemExit("exit while the exception is pickled")


def raise_exit_on_pickle_error_on(x: int, bad: int = 1) -> int:
    if x == bad:
        raise ExitOnPickleError(f"task {x} failed")
    return x


def leave_behind(how: str, x: int) -> int:
    """Task 0 starts a child it never waits for and closes stdout or stderr (``how``, as for
    :func:`close_stdio`), returning the child's pid; later tasks print (see :func:`print_pid`)."""
    if x == 0:
        pid = start_child(x)
        close_stdio(how)
        return pid
    return print_pid(x)


def type_name(x: Any) -> str:
    return type(x).__name__


def chatty(x: int, lines: int, fail: bool = False) -> int:
    """Print ``lines`` lines on stdout and as many on stderr, in turn; then fail if ``fail``."""
    import sys

    for k in range(lines):
        print(f"out {x}.{k}")
        print(f"err {x}.{k}", file=sys.stderr)
    if fail:
        raise ValueError(f"task {x} failed after printing")
    return x


def print_attempt(counter_dir: str, x: int, failures: int) -> int:
    """Say which attempt this is, then fail the first ``failures`` attempts of task ``x``."""
    attempt = len(list(Path(counter_dir).glob(f"{x}.*"))) + 1
    Path(counter_dir, f"{x}.{attempt}").touch()
    print(f"task {x} attempt {attempt}")
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} of task {x} fails")
    return attempt


def print_lines_then_fail(x: int, n: int) -> int:
    """Print ``n`` numbered lines (``line 000000``...), then fail."""
    import sys

    sys.stdout.writelines(f"line {k:06d}\n" for k in range(n))
    raise RuntimeError(f"task {x} printed {n} lines")


def print_then_sleep(x: int, seconds: float) -> int:
    print(f"task {x} started", flush=True)
    time.sleep(seconds)
    return x


def cpus_seen(x: int) -> tuple[int, int, int]:
    """What a call made inside this task would use: ``n_jobs`` 0 and 3, and how many workers
    a nested ``local`` call of 4 tasks ran them in."""
    from remotemap import remote_map
    from remotemap.config import resolve_n_jobs

    pids = remote_map(os.getpid, [()] * 4, mode="local", chunksize=1)
    return resolve_n_jobs(0), resolve_n_jobs(3), len(set(pids))


def busy_span(x: int, seconds: float) -> tuple[int, float, float]:
    """Sleep ``seconds``: (this process's pid, when the task started and ended: epoch s)."""
    started = time.time()
    time.sleep(seconds)
    return os.getpid(), started, time.time()


def most_at_once(spans: list[tuple[int, float, float]]) -> int:
    """The most of ``busy_span``'s tasks that ran at the same moment."""
    edges = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    running = most = 0
    for _, step in edges:  # at a tie an end sorts first: touching tasks do not overlap
        running += step
        most = max(most, running)
    return most
