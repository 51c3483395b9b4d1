"""local_with_dumps writes chunks ahead of its n_jobs running ones (DumpsSession ``ahead``):
they wait for a slot, so no more than n_jobs tasks ever run at once."""

from __future__ import annotations

import time

import pytest

from remotemap import remote_map


def span(seconds: float) -> tuple[float, float]:
    """When this task ran: (start, end), wall clock."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    # An end sorts before a start at the same instant: one slot handed straight on.
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_chunks_written_ahead_wait_for_a_free_slot(n_jobs: int) -> None:
    spans = remote_map(span, [(0.2,)] * 6, mode="local_with_dumps", n_jobs=n_jobs,
                       progress=False)
    assert most_at_once(spans) == n_jobs, spans
