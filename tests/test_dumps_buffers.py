"""local_with_dumps hands large array arguments to its tasks as files mapped from /dev/shm,
the way ``local`` does, instead of inside the sealed chunk file (issue 15: dumps at memory
speed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from remotemap import remote_map

#: 16 MB: well above buffers.SPILL_THRESHOLD (1 MB), so its data must go out of band.
N_ITEMS = 2_000_000


def mapped_argument_files(array: np.ndarray) -> tuple[float, list[str]]:
    """The array's sum and the remotemap argument files this process has mapped."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "remotemap-args-" in line}
    return float(array.sum()), sorted(paths)


def add_in_place(array: np.ndarray) -> float:
    array += 1.0  # the mapping is copy-on-write: allowed, and seen by this task only
    return float(array.sum())


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this machine")
def test_large_arguments_are_mapped_from_shared_memory_and_removed_after() -> None:
    arrays = [np.full(N_ITEMS, float(i)) for i in range(3)]
    got = remote_map(mapped_argument_files, [(a,) for a in arrays], mode="local_with_dumps",
                     n_jobs=2, progress=False)
    assert [total for total, _ in got] == [N_ITEMS * float(i) for i in range(3)]
    for _, paths in got:
        assert paths, "the array argument was not mapped from a file"
        assert all(path.startswith("/dev/shm/") for path in paths), paths
        assert not any(os.path.exists(path) for path in paths), "argument files left behind"


def test_a_task_may_write_to_its_mapped_argument_without_touching_the_callers() -> None:
    array = np.zeros(N_ITEMS)
    assert remote_map(add_in_place, [(array,)], mode="local_with_dumps",
                      progress=False) == [float(N_ITEMS)]
    assert not array.any()


def test_kept_run_files_hold_their_arguments_themselves(tmp_path: os.PathLike[str]) -> None:
    arrays = [np.full(N_ITEMS, 2.0)]
    got = remote_map(mapped_argument_files, [(a,) for a in arrays], mode="local_with_dumps",
                     keep_files=True, temp_dir=str(tmp_path), progress=False)
    assert got == [(2.0 * N_ITEMS, [])]  # in the chunk file, which stays readable alone
    chunk_files = list(os.scandir(next(os.scandir(tmp_path)).path + "/chunks"))
    assert chunk_files and chunk_files[0].stat().st_size > N_ITEMS * 8
