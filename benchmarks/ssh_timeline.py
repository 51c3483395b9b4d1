"""Where the time of one warm ``remote_map(mode="ssh")`` call goes (issue 15, point 5)::

    .venv/bin/python -m benchmarks.ssh_timeline [--calls 3] [--tree PATH]

Needs root (the loopback sshd of :mod:`benchmarks.ab_ssh`). One untimed call warms the host,
then each call of 8 tasks of 0.5 s CPU (``burn``) on 2 slots is timed, its steps stamped by
wrapping the ssh backend's methods in this process: the session taking its host, each chunk's
upload, its ``run`` line, its task's span on the host (the task's own clock: the same machine),
its ``done`` line seen, its outcome downloaded, the result reaching the caller, the run's end
(``drop``) and the call's return. Times are milliseconds after the call started; the summary
says how long each slot sat idle between two of its tasks and before the first / after the last.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.ab_ssh import CPU_SECONDS, CPU_TASKS, burn

EVENTS: list[tuple[float, str]] = []


def _stamp(what: str) -> None:
    EVENTS.append((time.time(), what))


def _wrap(owner: type, name: str, label: Callable[..., str], after: bool = True) -> None:
    """Stamp ``owner.name``'s start (``label(*args)``) and, when ``after``, its end."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        text = label(*args, **kwargs)
        _stamp(f"{text} >")
        out = original(*args, **kwargs)
        if after:
            _stamp(f"{text} <" + (f" {out[0]} {out[1]}" if isinstance(out, tuple) else ""))
        return out

    setattr(owner, name, stamped)


def instrument() -> None:
    from remotemap.backends import ssh, ssh_warm
    from remotemap.backends.remote_files import RemoteRun

    _wrap(ssh_warm.WarmRemoteRun, "__enter__", lambda *a: "session open")
    _wrap(ssh_warm.WarmRemoteRun, "__exit__", lambda *a: "session end")
    _wrap(RemoteRun, "stage", lambda run, chunk, start=True: f"stage {chunk.id} start={start}")
    _wrap(RemoteRun, "start", lambda run, chunk_id: f"run line {chunk_id}", after=False)
    _wrap(RemoteRun, "collect", lambda run, chunk, status: f"collect {chunk.id}")
    _wrap(RemoteRun, "next_done", lambda run, timeout: "next_done")
    _wrap(ssh.SSHSession, "wait", lambda *a, **k: "session wait")
    _wrap(ssh.SSHSession, "close", lambda *a, **k: "session close")


def one_call(options: dict[str, Any]) -> tuple[float, float, list[tuple[float, float]]]:
    from remotemap import remote_map

    EVENTS.clear()
    started = time.time()
    _stamp("call")
    spans = remote_map(burn, [(CPU_SECONDS,)] * CPU_TASKS, mode="ssh", **options)
    ended = time.time()
    _stamp("return")
    return started, ended, spans


def report(started: float, ended: float, spans: list[tuple[float, float]]) -> None:
    events = [(t, f"task {i} starts") for i, (t, _) in enumerate(spans)]
    events += [(t, f"task {i} ends") for i, (_, t) in enumerate(spans)]
    events += [e for e in EVENTS if not e[1].startswith(("next_done >", "session wait"))]
    for t, what in sorted(events):
        print(f"{(t - started) * 1000:9.1f} ms  {what}")
    ordered = sorted(spans)
    slots: list[list[tuple[float, float]]] = [[], []]
    for span in ordered:  # each task goes to the slot that freed first
        min(slots, key=lambda s: s[-1][1] if s else 0.0).append(span)
    for k, slot in enumerate(slots):
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(slot)]
        print(f"slot {k}: first task at {(slot[0][0] - started) * 1000:.1f} ms, gaps "
              + ", ".join(f"{g * 1000:.1f}" for g in gaps)
              + f" ms, last end to return {(ended - slot[-1][1]) * 1000:.1f} ms")
    took = ended - started
    print(f"elapsed {took:.3f} s, non-task {took - sum(e - s for s, e in spans) / 2:.3f} s, "
          f"task wall / cpu {sum(e - s for s, e in spans) / (CPU_TASKS * CPU_SECONDS):.3f}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--tree", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), help="the checkout whose remotemap runs")
    args = parser.parse_args(argv)
    from benchmarks.ab import use_tree

    use_tree(args.tree)
    import cloudpickle

    from tests.infra.login_user import ensure_test_user, install_remotemap_for_user
    from tests.infra.ssh_server import SSHServer

    cloudpickle.register_pickle_by_value(sys.modules["benchmarks.ab_ssh"])
    user = ensure_test_user()
    python = str(install_remotemap_for_user(user, Path(args.tree)))
    instrument()
    with SSHServer(user) as server:
        options: dict[str, Any] = {"hosts": [server.alias], "n_jobs": 2, "progress": False,
                                   "ssh_config": str(server.ssh_config), "python": python}
        one_call(options)
        for _ in range(args.calls):
            report(*one_call(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
