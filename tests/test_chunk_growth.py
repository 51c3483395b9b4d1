"""Chunks that grow once results show tasks shorter than a round trip (``tasks.ChunkSizer``),
and what ``run_chunk`` records per task on its fast path (no keywords, indices set at the end).

Speed itself is measured in benchmarks/ab.py, never asserted here: these tests pin down that
the faster paths keep every behaviour (every task once, in order, failures by index, times).
"""

from __future__ import annotations

import gc
import pickle
import time
import weakref
from fractions import Fraction
from http import HTTPStatus
from pathlib import Path

import pytest

from remotemap import RemoteException, remote_map
from remotemap.backends.local_worker import (
    chunk_span as _span,
)
from remotemap.backends.local_worker import (
    dumps_span_result as _dumps_result,
)
from remotemap.backends.local_worker import (
    loads_span_result as _loads_result,
)
from remotemap.buffers import BufferSpill, unpack
from remotemap.driver import _Tasks
from remotemap.execution import run_chunk
from remotemap.plain import dumps_plain
from remotemap.tasks import (
    Chunk,
    ChunkResult,
    ChunkSizer,
    learned_times,
    make_chunks,
    remember_times,
)
from tests import taskfuncs as tf


def _ran(chunk_id: int, n: int) -> Chunk:
    return Chunk(chunk_id, list(range(n)), [(i,) for i in range(n)], [{}] * n)


def test_chunks_grow_when_a_round_trip_costs_more_than_the_tasks() -> None:
    sizer = ChunkSizer(10, spread=2)
    sizer.sent(0)
    time.sleep(0.025)  # the way to the worker: the round trip is twice it, 50 ms
    result = run_chunk(tf.square, _ran(0, 10))  # ten tasks of a few hundred ns
    time.sleep(0.5)  # a caller busy elsewhere reads the result late: not part of the trip
    sizer.returned(result)
    run = result.ends[-1] - result.starts[0]
    assert run < 0.05  # else the machine stalled inside the chunk: nothing to learn
    assert sizer.size > 10
    assert int(0.05 / (run / 10)) - 1 <= sizer.size < int(0.5 / (run / 10))


def test_chunks_keep_their_size_for_tasks_longer_than_a_round_trip() -> None:
    sizer = ChunkSizer(2, spread=2)
    sizer.sent(0)
    chunk = Chunk(0, [0, 1, 2], [(i, 0.05) for i in range(3)], [{}] * 3)
    sizer.returned(run_chunk(tf.sleep_for, chunk))
    assert sizer.size == 2


def test_chunks_never_grow_unless_asked_or_for_chunks_not_sent() -> None:
    fixed = ChunkSizer(5)
    fixed.sent(0)
    time.sleep(0.02)
    fixed.returned(run_chunk(tf.square, _ran(0, 5)))
    assert fixed.size == 5
    growing = ChunkSizer(5, spread=2)
    growing.returned(run_chunk(tf.square, _ran(7, 5)))  # a retry's chunk: never sent()
    assert growing.size == 5


def test_tasks_cut_at_the_current_size_cover_every_task_once_in_order() -> None:
    n = 50
    largs = [(i,) for i in range(n)]
    sizer = ChunkSizer(4, spread=1)
    work = _Tasks(largs, [{}] * n, sizer, list(range(3, n)))
    first = work.take(2)
    sizer.size = 20  # as returned() would after a result of tiny tasks
    rest = work.take(10)
    assert work.ended()
    assert [len(c) for c in first + rest] == [4, 4, 20, 19]
    assert [i for c in first + rest for i in c.indices] == list(range(3, n))
    assert all(c.largs == [(i,) for i in c.indices] for c in first + rest)
    assert [c.id for c in first + rest] == [0, 1, 2, 3]
    work.again([7, 3])  # retries go out first, numbered after every first attempt
    (retry,) = work.take(1)
    assert (retry.id, retry.indices, retry.largs) == (n, [7, 3], [(7,), (3,)])


def test_grown_chunks_leave_an_equal_share_of_the_rest_to_each_worker() -> None:
    # Tiny tasks first, then maybe slow ones: growth never gives one worker all that is left,
    # and the workers get equal shares of it (not halves of halves: more chunks, more trips).
    sizer = ChunkSizer(4, spread=3)
    sizer.size = 1000  # as returned() would after a result of tiny tasks
    assert [sizer.size_for(left) for left in (900, 600, 300)] == [300, 300, 300]
    sizer = ChunkSizer(4, spread=3)
    sizer.size = 1000
    work = _Tasks([(i,) for i in range(100)], [{}] * 100, sizer, list(range(100)))
    assert [len(c) for c in work.take(10)] == [34, 34, 32]
    assert ChunkSizer(4, spread=3).size_for(900) == 4  # not grown: the size given


def test_a_call_starts_from_what_the_last_call_of_its_function_measured() -> None:
    # A round trip of 10 ms, tasks of 1 us: the first chunks are cut to size at once.
    sizer = ChunkSizer(1250, spread=2, prior=(0.01, 1e-6))
    assert sizer.learned() is None  # nothing measured by this call yet
    assert [sizer.size_for(left) for left in (10_000, 5_000)] == [5000, 5000]
    assert ChunkSizer(1250, prior=(0.01, 1e-6)).size_for(10_000) == 1250  # growth not asked
    # The first result of this call replaces the prior: these tasks are slow, size back to base.
    sizer.sent(0)
    chunk = Chunk(0, [0, 1], [(0, 0.05), (1, 0.05)], [{}] * 2)
    sizer.returned(run_chunk(tf.sleep_for, chunk))
    assert sizer.size == 1250
    learned = sizer.learned()
    assert learned is not None and learned[1] >= 0.05


class _Slotted:
    __slots__ = ()

    def __call__(self, x: int) -> int:
        return x


def test_local_remembers_each_function_s_task_times_while_the_function_lives() -> None:
    def tiny(x: int) -> int:
        return x + 1

    assert learned_times(tiny, "local") is None
    assert remote_map(tiny, [(i,) for i in range(2000)], mode="local", n_jobs=2,
                      progress=False) == [i + 1 for i in range(2000)]
    times = learned_times(tiny, "local")
    assert times is not None and times[0] > 0 and times[1] > 0
    # called again, it starts from those times and still gives every result in order
    assert remote_map(tiny, [(i,) for i in range(3000)], mode="local", n_jobs=2,
                      progress=False) == [i + 1 for i in range(3000)]
    assert learned_times(tiny, "serial") is None  # per backend
    slotted = _Slotted()  # takes no weak reference: not remembered, and no error
    remember_times(slotted, "local", (0.01, 1e-6))
    assert learned_times(slotted, "local") is None
    gone = weakref.ref(tiny)
    del tiny
    gc.collect()
    assert gone() is None  # the memory did not keep the function alive


def test_run_chunk_records_indices_times_and_failures_by_task() -> None:
    # no keywords in the chunk: f(*args); fail_on fails on 2 by default
    chunk = Chunk(0, [10, 11, 12, 13], [(0,), (1,), (2,), (3,)], [{}] * 4)
    result = run_chunk(tf.fail_on, chunk)
    assert result.indices == [10, 11, 13] and result.values == [0, 1, 3]
    assert [f.index for f in result.failures] == [12]
    assert sorted(result.task_times()) == [10, 11, 12, 13]
    keywords = Chunk(1, [0, 1], [(5,), (6,)], [{}, {"bad": (6,)}])
    result = run_chunk(tf.fail_on, keywords)  # keywords reach the one task that has some
    assert result.indices == [0] and [f.index for f in result.failures] == [1]


def test_local_run_of_many_tiny_tasks_keeps_order_and_names_the_failed_task() -> None:
    n = 20_000
    with pytest.raises(RemoteException) as info:
        remote_map(tf.fail_on, [(i,) for i in range(n)], [{"bad": (15_001,)}] * n,
                   mode="local", n_jobs=2, progress=False)
    assert [f.index for f in info.value.failures] == [15_001]
    results = info.value.results
    assert results[:15_001] == list(range(15_001))
    assert results[15_002:] == list(range(15_002, n))
    values = remote_map(tf.square, [(i,) for i in range(n)], mode="local", n_jobs=2,
                        progress=False)
    assert values == [i * i for i in range(n)]


def _stop_on(x: int) -> int:
    if x == 7:
        raise StopIteration("task 7 stops")  # list.extend(map(...)) would take it for the end
    return x


def test_a_failure_inside_a_grown_block_fails_that_task_alone() -> None:
    # Thousands of tiny tasks run in blocks of a plain loop; a task failing inside one still
    # fails alone, is named by its index, and its traceback starts in the user's function.
    n = 3000
    chunk = Chunk(0, list(range(100, 100 + n)), [(i, (1, 2500)) for i in range(n)], [{}] * n)
    result = run_chunk(tf.fail_on, chunk)
    assert [f.index for f in result.failures] == [101, 2600]
    assert result.values == [i for i in range(n) if i not in (1, 2500)]
    assert result.indices == [100 + i for i in range(n) if i not in (1, 2500)]
    assert sorted(result.task_times()) == list(range(100, 100 + n))
    trace = result.failures[1].traceback
    assert "in fail_on" in trace and "remotemap" not in trace
    stopped = run_chunk(_stop_on, Chunk(1, list(range(10)), [(i,) for i in range(10)], [{}] * 10))
    assert [(f.index, f.exception_type) for f in stopped.failures] == [(7, "StopIteration")]
    assert stopped.values == [0, 1, 2, 3, 4, 5, 6, 8, 9]


def test_local_indices_cross_as_a_span_only_when_consecutive() -> None:
    cut = list(make_chunks([(i,) for i in range(10)], [{}] * 10, 4, indices=[3, 4, 5, 7, 9, 8]))
    assert [c.consecutive for c in cut] == [False, False]  # 3, 4, 5, 7 and 9, 8
    cut = list(make_chunks([(i,) for i in range(10)], [{}] * 10, 4, indices=range(2, 10)))
    assert [_span(c) for c in cut] == [(2, 6), (6, 10)]
    assert _span(Chunk(0, [3, 4], [(3,), (4,)], [{}, {}])) is None  # not known consecutive
    ok = run_chunk(tf.fail_on, Chunk(0, [3, 4], [(3,), (4,)], [{}, {}]))
    back = _loads_result(_dumps_result(ok, (3, 5)))
    assert type(back.indices) is list and back.indices == [3, 4] and back.values == [3, 4]
    failed = run_chunk(tf.fail_on, Chunk(0, [1, 2, 3], [(1,), (2,), (3,)], [{}] * 3))
    back = _loads_result(_dumps_result(failed, (1, 4)))  # a failure: the indices go as they are
    assert back.indices == [1, 3] and [f.index for f in back.failures] == [2]


def test_local_retries_of_scattered_tasks_come_back_at_their_indices(tmp_path: Path) -> None:
    # First attempts go with consecutive indices (spans), the retries of tasks 3, 10, 17...
    # in chunks of scattered indices (lists): every value lands where it belongs.
    n = 40
    largs = [(str(tmp_path), i, int(i % 7 == 3)) for i in range(n)]
    values = remote_map(tf.fail_until, largs, mode="local", n_jobs=2, retries=1, backoff=0,
                        progress=False)
    assert values == [2 if i % 7 == 3 else 1 for i in range(n)]


def test_tasks_of_one_argument_travel_as_a_plain_list_and_run_as_f_of_x() -> None:
    spill = BufferSpill()
    try:
        singles = Chunk(0, [0, 1, 2], [((1, 2),), ([3],), (None,)], [{}, {}, {}])
        packed = spill.pack(singles, singles=True)
        assert packed.singles
        chunk, _ = unpack(packed)
        # a tuple or list argument stays one argument: f((1, 2)), not f(1, 2)
        assert chunk.singles and chunk.largs == [(1, 2), [3], None]
        assert run_chunk(tf.identity, chunk).values == [(1, 2), [3], None]
        for mixed in (Chunk(1, [0, 1], [(1,), (1, 2)], [{}, {}]),  # two arguments
                      Chunk(2, [0, 1], [(1,), (2,)], [{}, {"b": 3}]),  # a keyword
                      Chunk(3, [0], [()], [{}])):  # none
            packed = spill.pack(mixed, singles=True)
            back, _ = unpack(packed)
            assert not packed.singles and not back.singles and back.largs == mixed.largs
        assert not spill.pack(singles).singles  # only when asked (local_with_dumps is not)
    finally:
        spill.close()


def test_a_one_argument_chunk_names_its_failures_and_keeps_tuple_arguments_whole() -> None:
    # (Staged inputs, resolved in tuples, are test_staging's, which runs one-argument tasks.)
    spill = BufferSpill()
    try:  # fail_on fails on 2
        chunk, _ = unpack(spill.pack(Chunk(0, [5, 6, 7], [(0,), (2,), (3,)], [{}] * 3),
                                     singles=True))
    finally:
        spill.close()
    assert chunk.singles
    result = run_chunk(tf.fail_on, chunk)
    assert result.indices == [5, 7] and result.values == [0, 3]
    assert [f.index for f in result.failures] == [6]
    assert "in fail_on" in result.failures[0].traceback
    values = remote_map(tf.identity, [(i,) for i in range(500)] + [((1, 2),)], mode="local",
                        n_jobs=2, progress=False)
    assert values == [*range(500), (1, 2)]


def test_plain_values_pickle_in_one_pass_and_anything_else_is_refused() -> None:
    plain = [1, 2.5, "s", b"b", None, True, 3j, (1, "x"), [2, [3]], {"k": {4}}]
    blob = dumps_plain(plain)
    assert blob is not None and pickle.loads(blob) == plain
    # An int subclass (an IntEnum) is not plain: the caller may lack its class.
    for odd in ([1, tf.Unloadable()], [(1, object())], [{"k": Fraction(1, 3)}], [HTTPStatus.OK]):
        assert dumps_plain(odd) is None, odd
    # Past its limit it stops (large values go with the rest of the result, in one pass).
    assert dumps_plain([b"x" * 100], limit=50) is None
    assert dumps_plain([b"x" * 100], limit=200) is not None


def test_a_span_result_of_plain_values_and_one_of_others_both_load_whole() -> None:
    for values in ([0, 1.5, "two"], [0, Fraction(1, 2), "two"], [b"x" * (2 << 20), 1]):
        result = ChunkResult(3, [10, 11, 12], list(values))
        back = _loads_result(_dumps_result(result, (10, 13)))
        assert (back.chunk_id, back.indices, back.values) == (3, [10, 11, 12], values)
        assert back.consecutive
        # Given the chunk's own indices, the result takes that list: no new one is made.
        sent = [10, 11, 12]
        again = _loads_result(_dumps_result(ChunkResult(3, [], list(values)), (10, 13)), sent)
        assert again.indices is sent and again.values == values


def test_chunks_of_a_stepped_range_take_the_tasks_named_not_a_slice() -> None:
    largs = [(i,) for i in range(10)]
    cut = list(make_chunks(largs, [{}] * 10, 3, indices=range(0, 10, 2)))
    assert [list(c.indices) for c in cut] == [[0, 2, 4], [6, 8]]
    assert [c.largs for c in cut] == [[(0,), (2,), (4,)], [(6,), (8,)]]
    assert not any(c.consecutive for c in cut)
    consecutive = list(make_chunks(largs, [{}] * 10, 4, indices=range(2, 10)))
    assert [type(c.indices) for c in consecutive] == [range, range]
