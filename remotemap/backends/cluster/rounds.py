"""A round as the caller follows it: its status file, and the engine that writes it.

The caller never talks to an engine: it reads the round's status (``layout.status_name``),
which the engine rewrites at least every ``engine.HEARTBEAT`` second. An engine that stops
(killed, host rebooted) is replaced by :func:`watch_engine`, and the new one adopts the jobs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotemap.backends.cluster import layout
from remotemap.backends.cluster.engine import HEARTBEAT
from remotemap.backends.cluster.files import ClusterError, RunFiles
from remotemap.backends.cluster.handover import round_over
from remotemap.backends.cluster.settings import engine_env, engine_python, poll_interval
from remotemap.backends.cluster.verdict import stderr_tail

log = logging.getLogger("remotemap")

# An engine rewrites its round's status at least every ``HEARTBEAT`` (1) second; when the
# caller cannot ask the host whether the engine still holds its lock (over SSH), a silent
# status is all it has. Two thresholds, because the engine is silent for different reasons:
#: Seconds a *running* engine may go without rewriting its status before it counts as dead
#: (and is replaced): a sacct call or a submission can hold it up for many heartbeats.
STALE_AFTER = 20 * HEARTBEAT
#: Seconds an engine whose round *ended* may go without writing that it exited before it
#: counts as gone: it only has to stop soma-workflow's threads, so it is given less.
STALE_AFTER_END = 15 * HEARTBEAT
#: Seconds an engine may take to write its first status.
START_TIMEOUT = 60.0
#: Times a dead engine is restarted for one round before the run gives up.
MAX_RESTARTS = 3


#: The first pause of a caller waiting for engines to exit (``end_pauses``).
FIRST_END_PAUSE = 0.05


def end_pauses(settings: Mapping[str, Any]) -> Iterator[float]:
    """Pauses between looks at engines that are about to exit: short at first (an engine
    exits a fraction of a second after its round ended, and the caller returns only then),
    each 1.5 times the one before, up to the run's ``poll_interval`` (an SFTP round trip
    each through ``cluster.host``)."""
    pause, longest = FIRST_END_PAUSE, poll_interval(settings)
    while True:
        yield min(pause, longest)
        pause *= 1.5


@dataclass
class Round:
    """One round of a run as the caller follows it (its spec's jobs, its latest status)."""

    number: int
    jobs: list[list[int]]
    scheduler: str
    started: float = field(default_factory=time.monotonic)
    status: dict[str, Any] | None = None
    judged: bool = False
    heartbeat: tuple[float, float] = (0.0, 0.0)  # (value seen, local time it changed)
    restarts: int = 0

    @property
    def ended(self) -> bool:
        return bool(self.status and self.status.get("ended"))

    @property
    def exited(self) -> bool:
        """Over, and its engine process gone (or not heard of for a while)."""
        if not self.ended:
            return False
        if round_over(self.status):
            return True
        heartbeat = float((self.status or {}).get("heartbeat") or 0)
        return time.time() - heartbeat > STALE_AFTER_END


def watch_engine(rnd: Round, files: RunFiles, run_id: str,
                 settings: Mapping[str, Any]) -> None:
    """Replace a dead engine (or say why it never started)."""
    now = time.monotonic()
    beat = float((rnd.status or {}).get("heartbeat") or 0.0)
    if beat != rnd.heartbeat[0]:
        rnd.heartbeat = (beat, now)
    running = files.engine_running(rnd.number)
    if running is None:  # only the heartbeat tells
        last = rnd.heartbeat[1] if rnd.status else rnd.started
        running = now - last < (STALE_AFTER if rnd.status else START_TIMEOUT)
    if running:
        return
    fresh = files.read_json(layout.status_name(rnd.number))
    if fresh is not None and fresh.get("ended"):
        rnd.status = fresh  # it ended and exited after the caller's last look: not dead
        return
    if rnd.status is None and now - rnd.started < 10.0:
        return  # just started: it may not have taken its lock yet
    if rnd.status is None and rnd.restarts >= 1:
        tail = stderr_tail(files.read(layout.engine_log_name(rnd.number)), 5)
        raise ClusterError(f"{files.label}: the cluster engine of run {run_id} "
                           f"did not start: {tail or 'no output'}")
    if rnd.scheduler == "local" and rnd.status is not None:
        # The local scheduler's jobs were the dead engine's children: nothing to adopt.
        status = dict(rnd.status, ended=True, state="abandoned")
        files.write_many({layout.status_name(rnd.number): json.dumps(status).encode()})
        rnd.status = status
        return
    if rnd.restarts >= MAX_RESTARTS:
        raise ClusterError(f"{files.label}: the cluster engine of run {run_id} "
                           f"round {rnd.number} died {rnd.restarts + 1} times; see "
                           f"{layout.RoundPaths(files.root, rnd.number).engine_log}")
    rnd.restarts += 1
    rnd.started = now
    rnd.heartbeat = (rnd.heartbeat[0], now)
    log.warning("cluster run %s: the engine of round %d is gone; starting another "
                "(it adopts the submitted jobs)", run_id, rnd.number)
    files.engine(engine_python(settings), rnd.number, engine_env(settings))
