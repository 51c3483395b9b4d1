"""remote_map's ``ssh`` mode against a naive ``ssh HOST python -c ...`` per task.

Needs root (it starts a real sshd on 127.0.0.1 for a test user, as the tests do)::

    .venv/bin/python -m benchmarks.ssh [--tasks 1000] [--naive-tasks 50]

Both sides run trivial tasks (``x + 1``) on the same loopback host. remote_map's figure is end
to end: connecting, staging, running, copying outcomes back and removing the run directory.
The naive baseline runs one ``ssh`` process per task (with OpenSSH's own client, the usual
hand-written way), measured on fewer tasks and scaled. Target: 1,000 tasks in <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from remotemap import remote_map
from tests.infra.sshd import SSHServer, ensure_test_user, install_remotemap_for_user

TARGET_SECONDS = 2.0


def add_one(x: int) -> int:
    return x + 1


def naive_per_task(server: SSHServer, python: str, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        out = subprocess.run(
            ["ssh", "-F", str(server.ssh_config), "-o", "BatchMode=yes", server.alias,
             python, "-c", f"'print({i} + 1)'"],
            capture_output=True, text=True, check=True)
        assert int(out.stdout) == i + 1
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--naive-tasks", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.ssh needs root to start its sshd; skipped", file=sys.stderr)
        return 0
    user = ensure_test_user()
    python = str(install_remotemap_for_user(user))
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with SSHServer(user) as server:
        options: dict[str, Any] = {"hosts": [server.alias], "ssh_config": str(server.ssh_config),
                   "python": python, "progress": False}
        largs = [(i,) for i in range(args.tasks)]
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            got = remote_map(add_one, largs, mode="ssh", **options)
            times.append(time.perf_counter() - started)
            assert got == [i + 1 for i in range(args.tasks)]
        ours = min(times)
        naive = naive_per_task(server, python, args.naive_tasks) / args.naive_tasks * args.tasks
    header = f"seconds for {args.tasks} tasks"
    ours_name = f"remote_map mode=ssh (best of {args.repeats})"
    print(f"{'contender':<34} {header:>22} {'ratio':>8}")
    print(f"{'naive ssh per task (scaled)':<34} {naive:>22.2f} {1.0:>8.2f}")
    print(f"{ours_name:<34} {ours:>22.2f} "
          f"{ours / naive:>8.3f}")
    met = "met" if ours <= TARGET_SECONDS else "NOT met"
    print(f"target: <= {TARGET_SECONDS:.1f} s end to end including connect: {met} "
          f"({naive / ours:.0f}x faster than the naive way)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
