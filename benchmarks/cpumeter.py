"""How much CPU time *other* programs took while a workload ran (Linux ``/proc``).

A benchmark of parallel speedups on a small machine is only as good as the machine is quiet;
the load average cannot say, since it counts the benchmark's own workers. Here every user
process that is not this one or one of its descendants is sampled from ``/proc/PID/stat``
before and after (its own CPU time plus that of the children it reaped), and the hypervisor's
steal time from ``/proc/stat`` is added. Kernel threads are left out: most of their work here
(page zeroing, writeback) is done for the benchmark itself.
"""

from __future__ import annotations

import os
import time


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


_TICKS = _clock_ticks()
_PF_KTHREAD = 0x00200000


def _steal_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[8]) / _TICKS if len(fields) > 8 else 0.0


#: pid -> (parent pid, start time in ticks, CPU seconds incl. reaped children)
_Snapshot = dict[int, tuple[int, int, float]]


def _snapshot() -> _Snapshot:
    processes: _Snapshot = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue  # ended meanwhile
        after = text[text.rindex(")") + 2 :].split()  # field 3 (state) onwards
        ppid, flags = int(after[1]), int(after[6])
        if flags & _PF_KTHREAD or ppid == 2 or int(entry) == 2:
            continue
        utime, stime, cutime, cstime = (int(v) for v in after[11:15])
        start = int(after[19])
        processes[int(entry)] = (ppid, start, (utime + stime + cutime + cstime) / _TICKS)
    return processes


def _tree(snapshot: _Snapshot, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in snapshot.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class CpuMeter:
    """``start()``, run something, ``others_share()``: the share of all CPUs others used."""

    def __init__(self) -> None:
        self._start: tuple[float, float, _Snapshot] | None = None

    def start(self) -> None:
        steal = _steal_s()
        self._start = None if steal is None else (time.monotonic(), steal, _snapshot())

    def others_share(self) -> float | None:
        """0.0 (nobody else ran) to 1.0 (others kept every CPU busy); None off Linux."""
        steal = _steal_s()
        if self._start is None or steal is None:
            return None
        started, steal0, before = self._start
        wall = time.monotonic() - started
        after = _snapshot()
        me = os.getpid()
        ours = _tree(before, me) | _tree(after, me)
        others = steal - steal0
        for pid, (_, start, seconds) in after.items():
            if pid in ours or pid == 1:  # init reaps orphans, ours among them
                continue
            previous = before.get(pid)
            same = previous is not None and previous[1] == start
            others += seconds - (previous[2] if same and previous is not None else 0.0)
        if wall <= 0:
            return None
        # Children reaped meanwhile bring their whole CPU time along: clamp the small overshoot.
        return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))
