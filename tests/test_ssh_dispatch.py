"""The ssh mode's shared chunk queue: which host may hold a chunk ready ahead of its slots."""

from __future__ import annotations

from remotemap.backends.ssh import _Dispatch
from remotemap.tasks import Chunk


def _chunk(i: int) -> Chunk:
    return Chunk(i, [i], [(i,)], [{}])


def test_a_busy_host_holds_a_chunk_ahead_only_if_every_other_host_still_finds_one() -> None:
    dispatch = _Dispatch(["a", "b", "c"])
    dispatch.put(_chunk(0))
    dispatch.put(_chunk(1))
    assert dispatch.take_ahead() is None  # two left for three hosts: the idle ones need them
    dispatch.put(_chunk(2))
    ahead = dispatch.take_ahead()
    assert ahead is not None and ahead.id == 0
    assert [c.id for c in dispatch.queued()] == [1, 2]


def test_a_host_that_left_no_longer_counts() -> None:
    dispatch = _Dispatch(["a", "b"])
    dispatch.put(_chunk(0))
    assert dispatch.take_ahead() is None
    dispatch.leave(1)
    ahead = dispatch.take_ahead()
    assert ahead is not None and ahead.id == 0


def test_a_free_slot_takes_the_last_chunk() -> None:
    dispatch = _Dispatch(["a", "b"])
    dispatch.put(_chunk(0))
    taken = dispatch.take()
    assert taken is not None and taken.id == 0
    assert dispatch.take() is None
