"""The local modes write a chunk's large arguments over the /dev/shm files of chunks already
done (buffers.BufferSpill) instead of making new ones: never under a task that still maps one,
and never at the cost of an argument's content, size or flags."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from remotemap import ModeName, remote_map
from remotemap.buffers import BufferSpill, unpack
from remotemap.tasks import Chunk

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm here")

#: 1.6 MB: above buffers.SPILL_THRESHOLD (1 MiB), so each array goes to a file of its own.
N_ITEMS = 200_000
LOCAL_MODES = ["local", "local_with_dumps"]

#: Worker side: the arguments a task kept alive after it returned, with the value they held.
_KEPT: list[tuple[float, np.ndarray]] = []


def mapped_file(array: np.ndarray) -> str:
    """The file this process maps ``array``'s data from ("" for anonymous memory)."""
    address = array.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) == 6 else ""
    return ""


def sum_and_file(array: np.ndarray) -> tuple[float, int, str]:
    return float(array.sum()), len(array), mapped_file(array)


def keep_and_check(value: float, array: np.ndarray) -> tuple[bool, str]:
    """Keep ``array`` in this worker (a cache, say); whether every array kept so far still
    holds its value."""
    _KEPT.append((value, array))
    return all(bool((kept == held).all()) for held, kept in _KEPT), mapped_file(array)


def _one_a_chunk(mode: str) -> dict[str, Any]:
    """One worker, one task a chunk (local_with_dumps has no chunks: a process a task)."""
    return {"n_jobs": 1, **({"chunksize": 1} if mode == "local" else {})}


def flags_and_sum(array: np.ndarray) -> tuple[bool, float, tuple[int, ...]]:
    return bool(array.flags.writeable), float(array.sum()), array.shape


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_later_chunks_write_over_the_files_of_finished_ones(mode: str) -> None:
    """One worker, one task a chunk, arrays of growing and shrinking sizes: fewer files than
    tasks, and every task sees its own array whole."""
    sizes = [N_ITEMS, 3 * N_ITEMS, N_ITEMS, 2 * N_ITEMS, N_ITEMS, N_ITEMS, 4 * N_ITEMS]
    arrays = [np.full(n, float(i)) for i, n in enumerate(sizes)]
    got = remote_map(sum_and_file, [(a,) for a in arrays], mode=ModeName(mode), progress=False,
                     **_one_a_chunk(mode))
    assert [(total, n) for total, n, _ in got] == [(float(i * n), n)
                                                   for i, n in enumerate(sizes)]
    files = [path for _, _, path in got]
    assert all(path.startswith("/dev/shm/remotemap-args-") for path in files), files
    assert len(set(files)) < len(files), f"no argument file was written over: {files}"
    assert not any(os.path.exists(path) for path in files), "argument files left behind"


def test_an_argument_a_task_keeps_is_never_written_over() -> None:
    """A pool worker whose task keeps its argument alive (mapped) after returning: later chunks
    go to other files, and the kept arrays keep their values."""
    arrays = [np.full(N_ITEMS, float(i)) for i in range(8)]
    got = remote_map(keep_and_check, [(float(i), a) for i, a in enumerate(arrays)],
                     mode="local", n_jobs=1, chunksize=1, progress=False)
    assert all(intact for intact, _ in got), got
    files = [path for _, path in got]
    # The first chunk may run in a child forked from the caller, which ended: its file may be
    # reused. The pool worker kept each of the others: every one of those is a file of its own.
    pooled = files[1:]
    assert len(set(pooled)) == len(pooled), files


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_read_only_strided_and_fortran_arguments_arrive_as_sent(mode: str) -> None:
    """What decides how an array travels (in a file or inside the pickle) keeps its flags."""
    read_only = np.arange(N_ITEMS, dtype=float)
    read_only.flags.writeable = False
    strided = np.arange(4 * N_ITEMS, dtype=float)[::2]  # not contiguous: pickled in band
    fortran = np.asfortranarray(np.arange(N_ITEMS, dtype=float).reshape(400, -1))
    largs: list[tuple[Any, ...]] = [(read_only,), (strided,), (fortran,), (read_only,)]
    got = remote_map(flags_and_sum, largs, mode=ModeName(mode), progress=False,
                     **_one_a_chunk(mode))
    assert got == [(False, float(read_only.sum()), read_only.shape),
                   (True, float(strided.sum()), strided.shape),
                   (True, float(fortran.sum()), fortran.shape),
                   (False, float(read_only.sum()), read_only.shape)]


@pytest.fixture
def small_shm(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs, standing for a nearly full /dev/shm."""
    target = tmp_path / "shm"
    target.mkdir(mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                           str(target)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def test_a_buffer_that_does_not_fit_travels_in_the_pickle(small_shm: Path) -> None:
    """A buffer with no room for it, new or written over a free file that must grow, goes
    inside the pickle instead; the file that could not grow is removed."""
    spill = BufferSpill(parent=str(small_shm))
    three = np.full(3 << 17, 3.0)  # 3 MiB
    first = spill.pack(Chunk(0, [0, 1], [(three,), (three + 1,)], [{}, {}]))
    assert len(first.buffer_files) == 1  # the second 3 MiB did not fit beside the first
    assert _loaded(first) == [3.0 * three.size, 4.0 * three.size]
    spill.release(0)
    grown = spill.pack(Chunk(1, [2], [(np.full(7 << 16, 5.0),)], [{}]))  # 3.5 MiB: it fits
    assert grown.buffer_files == first.buffer_files
    assert _loaded(grown) == [5.0 * (7 << 16)]
    spill.release(1)
    too_big = spill.pack(Chunk(2, [3], [(np.full(5 << 17, 6.0),)], [{}]))  # 5 MiB
    assert too_big.buffer_files == [] and len(too_big.data) > 5 << 20
    assert _loaded(too_big) == [6.0 * (5 << 17)]
    assert not any(small_shm.rglob("*.buf")), "the file that could not grow was left"
    spill.close()
    assert not any(small_shm.iterdir())


def _loaded(packed: Any) -> list[float]:
    chunk, _ = unpack(packed)
    return [float(args[0].sum()) for args in chunk.largs]
