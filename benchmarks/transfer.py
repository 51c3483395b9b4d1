"""Large transfers over SSH: remotemap against ``scp`` and ``rsync`` on the same sshd, one run.

Needs root (it starts a real sshd on 127.0.0.1 for a test user, as the tests do)::

    .venv/bin/python -m benchmarks.transfer [--files 4] [--mb 100] [--rounds 3] [--json PATH]
                                              [--only WORD]

Every contender moves ``--files`` files of ``--mb`` MB (10^6 bytes) each way it can, end to
end (connecting included, as ``scp`` connects on every call too):

- remotemap arguments: ``remote_map`` in mode ssh, tasks taking an argument of ``MB`` bytes;
- remotemap results: the same, tasks returning ``MB`` bytes each;
- remotemap fetched files: tasks writing a file of ``MB`` bytes, copied back by ``fetch``;
- remotemap staged inputs: tasks taking a local file as ``Staged(path)``, staged to the host
  (sent into the run's staging area, removed at the end) and read there;
- ``send_file`` of :mod:`remotemap.ssh.sending` (what staging calls: a part file, resumable)
  through the OpenSSH lane, and the same with the lane disabled (paramiko SFTP);
- ``put_file`` / ``get_file`` of :mod:`remotemap.ssh.transfer` (the OpenSSH lane), and the same
  with the lane disabled (paramiko SFTP, the fallback for password, proxy and jump hosts);
- ``scp`` and ``rsync`` with the same host, user, key and known_hosts (``StrictHostKeyChecking
  yes``), their destination removed before each call (rsync would otherwise send a delta).

The contenders take turns, one call each per round, so other load on the machine falls on all
of them alike; the figure is the best round (the least disturbed), with the median beside it
and the 1-minute load average sampled around each call. Target: every remotemap row at least
the ``scp`` row of the same direction.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from remotemap import Staged, remote_map
from remotemap.ssh import Connection, sending, transfer
from remotemap.ssh.openssh import OpenSSH
from tests.infra.sshd import SSHServer, ensure_test_user, install_remotemap_for_user


def make_result(n: int) -> bytes:
    return bytes(n)


def size_of(data: bytes) -> int:
    return len(data)


def file_size(path: str) -> int:
    return os.path.getsize(path)  # not read: the row times the staging, as scp's its copy


def write_file(n: int, index: int) -> int:
    with open(f"out-{index}.bin", "wb") as f:
        f.write(bytes(n))
    return n


class Bench:
    """The sshd, the local files and every contender as a callable moving the data once."""

    def __init__(self, server: SSHServer, python: str, files: int, size: int, work: Path):
        self.server, self.python, self.files, self.size = server, python, files, size
        self.local = [work / f"src-{i}.bin" for i in range(files)]
        self.back = work / "back"
        for path in self.local:
            with open(path, "wb") as f:
                f.write(os.urandom(size))
        # Gets read the seeded sources; puts write into dst, emptied before each call.
        self.src, self.dst = "bench-transfer/src", "bench-transfer/dst"
        with self.connect() as conn:
            for folder in (self.src, self.dst):
                conn.makedirs_private(folder)
            for path in self.local:
                transfer.put_file(conn, path, f"{self.src}/{path.name}")
        self.ssh_options = ["-F", "/dev/null", "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=yes",
                            "-o", f"UserKnownHostsFile={server.known_hosts}",
                            "-o", "IdentitiesOnly=yes", "-i", str(server.client_key)]
        self.login = f"{server.user.name}@{server.host}"

    def connect(self, sftp_only: bool = False) -> Connection:
        s = self.server
        conn = Connection(s.host, user=s.user.name, port=s.port, key_file=s.client_key,
                          known_hosts=s.known_hosts, ssh_config=os.devnull, allow_agent=False)
        if sftp_only:
            conn.fast_lane = OpenSSH(conn.spec, False, disabled="benchmark: SFTP only")
        return conn

    def clean(self) -> None:
        """No destination left from the previous call, on either side (untimed)."""
        with self.connect() as conn:
            conn.run(["sh", "-c", 'rm -f -- "$1"/*', "sh", self.dst], check=True)
        shutil.rmtree(self.back, ignore_errors=True)
        self.back.mkdir()

    def contenders(self) -> dict[str, Callable[[], None]]:
        return {
            "remotemap arguments": self.arguments,
            "remotemap results": self.results,
            "remotemap fetched files": self.fetched,
            "remotemap staged inputs": self.staged,
            "put_file (OpenSSH lane)": lambda: self.put(False),
            "get_file (OpenSSH lane)": lambda: self.get(False),
            "put_file (paramiko SFTP)": lambda: self.put(True),
            "get_file (paramiko SFTP)": lambda: self.get(True),
            "send_file (OpenSSH lane)": lambda: self.send(False),
            "send_file (paramiko SFTP)": lambda: self.send(True),
            "scp put": lambda: self.scp(put=True),
            "scp get": lambda: self.scp(put=False),
            "rsync put": lambda: self.rsync(put=True),
            "rsync get": lambda: self.rsync(put=False),
        }

    def options(self) -> dict[str, Any]:
        return {"mode": "ssh", "hosts": [self.server.alias],
                "ssh_config": str(self.server.ssh_config), "python": self.python,
                "progress": False}

    def results(self) -> None:
        got = remote_map(make_result, [(self.size,)] * self.files, **self.options())
        assert [len(g) for g in got] == [self.size] * self.files

    def arguments(self) -> None:
        payload = bytes(self.size)  # one object: made once, pickled into each chunk
        got = remote_map(size_of, [(payload,)] * self.files, **self.options())
        assert got == [self.size] * self.files

    def fetched(self) -> None:
        largs = [(self.size, i) for i in range(self.files)]
        remote_map(write_file, largs, fetch=["*.bin"], fetch_dir=str(self.back), **self.options())
        sizes = [p.stat().st_size for p in self.back.glob("*/*.bin")]
        assert sizes == [self.size] * self.files, sizes

    def staged(self) -> None:
        got = remote_map(file_size, [(Staged(str(p)),) for p in self.local], **self.options())
        assert got == [self.size] * self.files, got

    def empty_run(self) -> float:
        """Seconds of a remote_map call of as many tasks returning nothing: its fixed cost."""
        started = time.perf_counter()
        remote_map(make_result, [(0,)] * self.files, **self.options())
        return time.perf_counter() - started

    def put(self, sftp_only: bool) -> None:
        with self.connect(sftp_only) as conn:
            for path in self.local:
                transfer.put_file(conn, path, f"{self.dst}/{path.name}")

    def send(self, sftp_only: bool) -> None:
        with self.connect(sftp_only) as conn:
            for path in self.local:
                assert sending.send_file(conn, str(path), f"{self.dst}/{path.name}") == self.size

    def get(self, sftp_only: bool) -> None:
        with self.connect(sftp_only) as conn:
            for path in self.local:
                transfer.get_file(conn, f"{self.src}/{path.name}", self.back / path.name)

    def scp(self, put: bool) -> None:
        argv = ["scp", "-q", "-P", str(self.server.port), *self.ssh_options]
        if put:
            argv += [*map(str, self.local), f"{self.login}:{self.dst}/"]
        else:
            argv += [f"{self.login}:{self.src}/{p.name}" for p in self.local]
            argv.append(f"{self.back}/")
        subprocess.run(argv, check=True)

    def rsync(self, put: bool) -> None:
        ssh = shlex.join(["ssh", "-p", str(self.server.port), *self.ssh_options])
        argv = ["rsync", "--protect-args", "--whole-file", "-e", ssh]
        if put:
            argv += [*map(str, self.local), f"{self.login}:{self.dst}/"]
        else:
            argv += [f"{self.login}:{self.src}/{p.name}" for p in self.local]
            argv.append(f"{self.back}/")
        subprocess.run(argv, check=True)


def measure(bench: Bench, rounds: int, say: Callable[[str], None],
            only: list[str] | None = None) -> dict[str, Any]:
    """Every contender once per round, in turns (every other round backwards); ``only``:
    those whose name contains one of these words."""
    contenders = {name: run for name, run in bench.contenders().items()
                  if not only or any(word in name for word in only)}
    order = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in order}
    loads: dict[str, list[float]] = {name: [] for name in order}
    empty: list[float] = []
    for r in range(rounds):
        for name in order:
            bench.clean()
            before = os.getloadavg()[0]
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)
            loads[name].append((before + os.getloadavg()[0]) / 2)
            say(f"round {r + 1}/{rounds}: {name}: {times[name][-1]:.2f} s")
        empty.append(bench.empty_run())
        order.reverse()
    return {"times_s": times, "load": loads, "empty_run_s": empty}


def report(found: dict[str, Any], total_mb: float) -> list[str]:
    empty = min(found["empty_run_s"])
    lines = [f"{'contender':<28} {'MB/s best':>10} {'MB/s median':>12} {'load avg':>9}"]
    for name, times in found["times_s"].items():
        best, median = total_mb / min(times), total_mb / statistics.median(times)
        load = statistics.mean(found["load"][name])
        lines.append(f"{name:<28} {best:>10.0f} {median:>12.0f} {load:>9.1f}")
    lines.append(f"remote_map fixed cost (same tasks, no data): {empty:.2f} s (best)")
    for name in ("remotemap arguments", "remotemap results", "remotemap fetched files",
                 "remotemap staged inputs"):
        if name not in found["times_s"]:
            continue
        net = min(found["times_s"][name]) - empty
        if net > 0:
            lines.append(f"{name}, fixed cost taken off: {total_mb / net:.0f} MB/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--mb", type=int, default=100, help="MB (10^6 bytes) per file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write every timing to PATH")
    parser.add_argument("--only", action="append", metavar="WORD",
                        help="only the contenders whose name holds WORD (repeatable)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.transfer needs root to start its sshd; skipped", file=sys.stderr)
        return 0
    user = ensure_test_user()
    python = str(install_remotemap_for_user(user))
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {text}", file=sys.stderr, flush=True)

    with SSHServer(user) as server, tempfile.TemporaryDirectory(prefix="rm-xfer-") as work:
        bench = Bench(server, python, args.files, args.mb * 10**6, Path(work))
        found = measure(bench, args.rounds, say, args.only)
    total_mb = args.files * args.mb
    print(f"{args.files} x {args.mb} MB each way, loopback sshd, {os.cpu_count()} CPUs, "
          f"best of {args.rounds} rounds (contenders in turns)")
    print("\n".join(report(found, total_mb)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"files": args.files, "mb": args.mb, **found}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
