"""The one worker every out-of-process backend runs: ``python -m remotemap.worker``.

Two ways to run it:

``python -m remotemap.worker run RUN_DIR --key-file PATH [--fail-exit] CHUNK [CHUNK ...]``
    Run the chunks one after the other in this process (a batch job does this), with the
    run's key read from ``PATH`` (a private file outside the run directory). With
    ``--fail-exit`` it exits with status 3 when a task failed, so a batch system holding
    jobs that depend on this one does not start them (a workflow's steps on ``cluster``).

``python -m remotemap.worker serve RUN_DIR [--task-dirs] [--no-preload] [--remove-orphaned]``
    A preloaded server: it reads the run's key from the first line of its stdin (``key HEX``,
    plus ``DEV INO`` when the caller knows which directory it made), then loads the function
    once (importing what the function needs), then forks one child per chunk it is told to
    run, so each chunk gets its own process - a crash kills one chunk, not the run - without
    paying for a fresh interpreter each time. It reads
    ``run CHUNK [TIMEOUT]`` lines on stdin and answers ``done CHUNK STATUS`` on stdout. When
    stdin closes (the caller finished, was interrupted or died) it kills its children and exits;
    with ``--remove-orphaned`` (``local_with_dumps``) it also removes the run directory unless
    the caller said ``close`` first: a caller killed by SIGKILL cannot remove it itself.
    ``open {JSON}`` (root, key, env) makes it serve another run: the ``ssh`` mode keeps a
    host's server warm between calls (``ssh.keep_alive``) and sends it when the next begins;
    ``drop`` removes the run directory (answered ``dropped``) when a call ends; ``put``
    writes a chunk's file sent on stdin (``remotemap.worker_stdin``). ``tune SLOTS
    INLINE`` (``ssh``) caps the children and holds further chunks, and sends small outcomes
    after their ``done`` line (``remotemap.worker_children``).

    Before forking a chunk's child, the server reads the chunk's sealed file and imports the
    modules its pickle names (``remotemap.preload``: no unpickling), so the children inherit
    them (an ``Executor`` or joblib chunk carries its callables). An import that starts
    threads makes later forks copy them; one that hangs holds up the server. ``--no-preload``
    (``preload = false`` in ``[local_with_dumps]`` and ``[ssh]``) turns it off.

Either way the worker enters the run directory only if no other user can change it, reaches
its files through a descriptor opened once (``remotemap.rundir``), unpickles only files whose
seal the run's key checks, and seals the outcomes it writes (see ``remotemap.protocol``).

The worker imports only the standard library, cloudpickle and remotemap's lower modules
(``_version``, ``errors``, ``execution``, ``integrity``, ``leftovers``, ``preload``,
``protocol``, ``rundir``, ``tasks``, ``worker_children``, ``worker_run``, ``worker_stdin``;
``remotemap/__init__`` imports its public names lazily), never the driver, config, api,
executor, workflow or cli;
``tests/test_layers_worker.py`` holds it to that list. This module holds the program (its
commands, the key line) and the fork server; what runs a chunk in the run directory is
``remotemap.worker_run``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sys
import time

from remotemap._version import __version__
from remotemap.capture import keep_in_log
from remotemap.errors import UnsafePath
from remotemap.integrity import read_key_file
from remotemap.preload import Preloader
from remotemap.protocol import chunk_name, log_name
from remotemap.rundir import LocalRunDir
from remotemap.worker_children import Slots, die_with_parent, kill_group, load_prctl, wait_to_go
from remotemap.worker_run import Function, WorkerRun, execute_chunk, load_function, run_chunks
from remotemap.worker_stdin import StdinReader, read_key_line

#: ``run --fail-exit``'s status when a task failed.
TASK_FAILED_EXIT = 3
#: A forked child's status when it could not write its outcome (EX_SOFTWARE); its log says why.
OUTCOME_UNWRITABLE_EXIT = 70


class _Server:
    """The fork server: one child process per chunk, at most as many as the caller sends."""

    def __init__(self, run: WorkerRun, task_dirs: bool = False, preload: bool = True,
                 remove_orphaned: bool = False) -> None:
        self.run = run
        self.task_dirs = task_dirs
        self.remove_orphaned = remove_orphaned  # cleared by the caller's ``close``
        self.preloader = Preloader() if preload else None
        # The protocol gets its own copy of stdout; fd 1 then points at stderr so that a stray
        # print() in user code can never corrupt the protocol stream.
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        self.children: dict[int, tuple[int, float | None]] = {}  # pid -> (chunk, deadline)
        self.timed_out: set[int] = set()
        self.slots = Slots()  # untuned: every chunk starts when told
        self.prctl = load_prctl()
        self.function: Function | None = None
        self.run_env: list[str] = []  # the variables the current run set (``open``)
        self._load()

    def _load(self) -> None:
        try:
            self.function = load_function(self.run)
        except Exception:
            self.function = None  # each child retries and reports the error per task

    def ready_line(self) -> str:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"ready {os.getpid()} {sys.version.split()[0]} {__version__} {cpus or 1}\n"

    def reopen(self, spec: str) -> None:
        """``open {"root": ..., "key": HEX, "env": {...}}``: serve another run from now on (a
        warm server, kept by its caller between calls). The caller sends it only when none of
        its chunks runs; the new run's directory is entered with the same checks, its key
        comes on this line (stdin, never the host's disk), and its variables replace the last
        run's. Answers ``ready ...`` again; an unsafe directory ends the server (SystemExit)."""
        import json

        fields = json.loads(spec)
        self.stop_children()
        for name in self.run_env:
            os.environ.pop(name, None)
        env = {str(k): str(v) for k, v in fields.get("env", {}).items()}
        os.environ.update(env)
        self.run_env = list(env)
        old, self.run = self.run, WorkerRun(_enter(fields["root"]), bytes.fromhex(fields["key"]))
        old.rundir.close()
        self._load()
        self.out.write(self.ready_line())

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd fires
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when to stop
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        self.out.write(self.ready_line())
        stdin = StdinReader()
        stdin_open = True
        try:
            while stdin_open or self.children:
                for key, _ in selector.select(self._next_timeout()):
                    if key.fd == wake_r:
                        _drain(wake_r)
                        continue
                    data = os.read(0, 65536)
                    if not data:
                        stdin_open = False
                        selector.unregister(0)
                        self._mute()
                        self.stop_children()
                        continue
                    for line, payload in stdin.feed(data):
                        self.handle(line, payload)
                self.reap()
                self.enforce_deadlines()
        except BrokenPipeError:  # the caller is gone: it no longer reads our answers
            stdin_open = False
            self._mute()
        finally:
            self.stop_children()
            if not stdin_open and self.remove_orphaned:  # gone without its ``close``
                self.run.rundir.remove()

    def _mute(self) -> None:
        """Our answers go to /dev/null once no one reads them: neither a ``done`` line of the
        children stopped now nor the flush at exit then fails (a traceback in the caller's
        terminal)."""
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self.out.fileno())
        os.close(null)

    def handle(self, line: str, payload: bytes | None = None) -> None:
        words = line.split()
        if not words:
            return
        if payload is not None:  # ``put CHUNK SIZE``: a chunk's sealed file, checked when read
            with contextlib.suppress(OSError):  # else its child reports the file missing
                self.run.rundir.write(chunk_name(int(words[1])), payload)
            return
        if words[0] == "open":
            self.reopen(line[len("open"):])
            return
        if words == ["drop"]:  # a warm server's caller is done with the run: its files go
            self.run.rundir.remove()
            self.out.write("dropped\n")
            return
        if words[0] == "tune":
            self.slots.tune(words[1:])
            return
        if words == ["close"]:  # the caller ends the run itself (and removes its files)
            self.remove_orphaned = False
            return
        if words[0] != "run" or len(words) not in (2, 3):
            self.out.write(f"error unknown command {line!r}\n")
            return
        chunk_id = int(words[1])
        # Preloaded now, even for a chunk held for a slot: it then starts the moment one frees.
        chunk = (chunk_id, float(words[2]) if len(words) == 3 else None, self._preload(chunk_id))
        self._fork(*chunk, standby=not self.slots.admit(len(self.children), chunk))

    def _fork(self, chunk_id: int, timeout: float | None, data: bytes | None,
              standby: bool = False) -> None:
        """Fork the chunk's child; ``standby``: it waits for :meth:`Slots.release`'s byte."""
        go = os.pipe() if standby else None
        pid = os.fork()
        if pid == 0:
            self._child(chunk_id, data, go)  # never returns
        if go is not None:
            os.close(go[0])
            self.slots.stand_by(chunk_id, pid, go[1])
        self._started(pid, chunk_id, None if go is not None else timeout)

    def _started(self, pid: int, chunk_id: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout  # from its start
        self.children[pid] = (chunk_id, deadline)

    def _preload(self, chunk_id: int) -> bytes | None:
        """The chunk's checked content, once the modules it names are imported here; None
        when preloading is off or the file cannot be read (the child then reads it and
        reports why, as without preloading)."""
        if self.preloader is None:
            return None
        try:
            data = self.run.load(chunk_name(chunk_id))
        except Exception:
            return None  # missing or tampered: never looked into here
        self.preloader.preload(data)
        return data

    def _child(self, chunk_id: int, data: bytes | None, go: tuple[int, int] | None) -> None:
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            os.setpgid(0, 0)  # its own group, so a timeout kills what the task spawned too
            die_with_parent(self.prctl)
            log = self.run.rundir.open_for_writing(log_name(chunk_id))
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            if go is not None:
                wait_to_go(go, self.slots.go_pipes())
            execute_chunk(self.run, chunk_id, self.function, self.task_dirs, data)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = OUTCOME_UNWRITABLE_EXIT
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            chunk_id, _ = self.children.pop(pid)
            self.slots.lost(pid)
            # What the task started and left running dies with it (the child's group, which
            # outlives the reaped child while members remain, so the id cannot be reused).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            for held, timeout, data, standby in self.slots.release(len(self.children)):
                if standby is None:  # before the caller hears
                    self._fork(held, timeout, data)
                else:
                    self._started(standby, held, timeout)
            if pid in self.timed_out:
                self.timed_out.discard(pid)
                text = "timeout"
            elif os.WIFSIGNALED(status):
                text = f"signal:{os.WTERMSIG(status)}"
            else:
                text = f"exit:{os.WEXITSTATUS(status)}"
            self.out.flush()
            self.out.buffer.write(self.slots.done_message(self.run.rundir, chunk_id, text))
            self.out.buffer.flush()

    def _next_timeout(self) -> float | None:
        deadlines = [d for _, d in self.children.values() if d is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for pid, (_, deadline) in self.children.items():
            if deadline is not None and now >= deadline and pid not in self.timed_out:
                self.timed_out.add(pid)
                kill_group(pid, signal.SIGKILL)

    def stop_children(self) -> None:
        """Stop every child: SIGTERM first so tasks may clean up, SIGKILL if they linger;
        the chunks held for a slot never start."""
        self.slots.clear()
        for pid in self.children:
            kill_group(pid, signal.SIGTERM)
        give_up = time.monotonic() + 0.5
        while self.children and time.monotonic() < give_up:
            self.reap()
            time.sleep(0.01)
        for pid in self.children:
            kill_group(pid, signal.SIGKILL)
        while self.children:
            self.reap()
            time.sleep(0.005)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


#: Set by a caller on this machine: its sys.path (JSON), so modules it imports from a script's
#: folder or a notebook's directory import the same way in the worker.
SYS_PATH_ENV = "REMOTEMAP_SYS_PATH"


def _adopt_caller_sys_path() -> None:
    import json

    paths = json.loads(os.environ.pop(SYS_PATH_ENV, "[]"))
    sys.path[:0] = [p for p in paths if isinstance(p, str) and p not in sys.path]


def _enter(root: str, expected: tuple[int, int] | None = None) -> LocalRunDir:
    # Absolute: tasks may change directory, and the run directory may be given relative to
    # the remote home.
    try:
        return LocalRunDir.enter(os.path.abspath(root), expected)
    except UnsafePath as exc:
        raise SystemExit(f"remotemap.worker: {exc}") from None


_SERVE_FLAGS = {"--task-dirs", "--no-preload", "--remove-orphaned"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    _adopt_caller_sys_path()
    keep_in_log()  # a chunk's stdout and stderr are its log: what tasks print stays there too
    if len(args) >= 2 and args[0] == "serve" and set(args[2:]) <= _SERVE_FLAGS:
        key, identity = read_key_line()
        run = WorkerRun(_enter(args[1], identity), key)
        _Server(run, task_dirs="--task-dirs" in args[2:], preload="--no-preload" not in args[2:],
                remove_orphaned="--remove-orphaned" in args[2:]).serve()
        return 0
    if len(args) >= 4 and args[0] in ("run", "pilot") and args[2] == "--key-file":
        try:
            key = read_key_file(args[3])
        except (OSError, UnsafePath) as exc:
            raise SystemExit(f"remotemap.worker: the run key {args[3]}: {exc}") from None
        if args[0] == "pilot":  # a worker job that pulls chunks (cluster.dispatch "workers")
            from remotemap.pilot import PilotOptions
            from remotemap.pilot_slots import run_pilot

            try:
                options = PilotOptions.parse(args[4:])
            except ValueError as exc:
                raise SystemExit(f"remotemap.worker pilot: {exc}") from None
            return run_pilot(WorkerRun(_enter(args[1]), key), options)
        fail_exit = "--fail-exit" in args[4:]
        chunks = [int(c) for c in args[4:] if c != "--fail-exit"]
        ok = run_chunks(WorkerRun(_enter(args[1]), key), chunks)
        return TASK_FAILED_EXIT if fail_exit and not ok else 0
    usage = ("serve RUN_DIR [--task-dirs] [--no-preload] [--remove-orphaned] (key line on "
             "stdin) | "
             "run RUN_DIR --key-file PATH [--fail-exit] CHUNK... | "
             "pilot RUN_DIR --key-file PATH --round R --job J --workers N [--walltime S] "
             "[--slots K]")
    print(f"usage: python -m remotemap.worker {usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

