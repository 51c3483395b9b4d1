"""How a cluster round's many small files are made cheaply: queue markers as hard links of
one empty file (``pilot.make_markers``), small chunk files in one pack (``chunk_packs``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from remotemap import remote_map
from remotemap.pilot import CLAIMED, QUEUE, PilotQueue, queue_marker
from tests import cluster_support
from tests import taskfuncs as tf

state_home = cluster_support.state_home
runs_dir = cluster_support.runs_dir
swf = cluster_support.swf
local = cluster_support.local


def test_markers_are_links_of_one_empty_file_and_claim_one_by_one(tmp_path: Path) -> None:
    from remotemap.pilot import make_markers, marker_source

    for sub in (QUEUE, CLAIMED, "rounds"):
        (tmp_path / sub).mkdir()
    names = [queue_marker(2, file) for file in range(40)]
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        make_markers(str(tmp_path), names, marker_source(2), dir_fd=fd)
        make_markers(str(tmp_path), names[:3], marker_source(2), dir_fd=fd)  # again: no error
    finally:
        os.close(fd)
    source = (tmp_path / marker_source(2)).stat()
    assert source.st_size == 0 and source.st_nlink == 41
    assert all((tmp_path / name).stat().st_ino == source.st_ino for name in names)
    queue = PilotQueue(str(tmp_path), 2)
    first, second = queue.claim(0, lambda n: 25), queue.claim(1, lambda n: 25)
    assert first == list(range(25)) and second == list(range(25, 40))
    assert queue.waiting() == [] and (tmp_path / marker_source(2)).exists()


def test_markers_are_files_where_links_cannot_be_made(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without hard links (AFS across directories; ext4 after 65,000): a fault
    that cannot be made on this machine's filesystems, so ``os.link`` fails after 3 links."""
    from remotemap.pilot import make_markers, marker_source

    for sub in (QUEUE, "rounds"):
        (tmp_path / sub).mkdir()
    real_link = os.link
    made: list[Any] = []

    def link(*args: Any, **kwargs: Any) -> None:
        if len(made) == 3:
            raise OSError(31, "Too many links")
        made.append(args)
        real_link(*args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    names = [queue_marker(0, file) for file in range(10)]
    make_markers(str(tmp_path), names, marker_source(0))
    inodes = {(tmp_path / name).stat().st_ino for name in names}
    assert len(made) == 3 and len(inodes) == 1 + 7  # 3 links of the source, then 7 files
    assert PilotQueue(str(tmp_path), 0).waiting() == list(range(10))


def _pack_run(root: Path, blobs: dict[int, bytes]) -> tuple[Any, dict[str, bytes]]:
    """A run directory holding ``blobs`` as ``chunk_packs.packed`` lays them out, and a
    worker's view of it."""
    from remotemap.chunk_packs import packed
    from remotemap.integrity import new_key
    from remotemap.protocol import chunk_name, seal_file
    from remotemap.rundir import LocalRunDir
    from remotemap.worker_run import WorkerRun

    key = new_key()
    files = packed({file: seal_file(key, chunk_name(file), data) for file, data in blobs.items()})
    (root / "chunks").mkdir(mode=0o700)
    root.chmod(0o700)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return WorkerRun(LocalRunDir.enter(str(root)), key), files


def test_small_chunks_go_in_one_pack_and_load_as_their_own_files(tmp_path: Path) -> None:
    from remotemap.chunk_packs import PACK_BLOB_LIMIT, pack_name
    from remotemap.protocol import chunk_name

    blobs = {file: f"chunk {file}".encode() * file for file in range(3, 23)}
    blobs[9] = b"x" * (PACK_BLOB_LIMIT + 1)  # too large to be copied into the pack
    run, files = _pack_run(tmp_path, blobs)
    assert set(files) == {pack_name(3, 22), chunk_name(9)}
    assert sorted(os.listdir(tmp_path / "chunks")) == ["000003-000022.pack", "000009.pkl"]
    for file, data in blobs.items():
        assert run.load_chunk(file) == data
    with pytest.raises(FileNotFoundError):
        run.load_chunk(23)


def test_a_few_chunks_stay_files_of_their_own(tmp_path: Path) -> None:
    from remotemap.chunk_packs import PACK_ABOVE

    blobs = {file: bytes([file]) * 10 for file in range(PACK_ABOVE)}
    run, files = _pack_run(tmp_path, blobs)
    assert all(rel.endswith(".pkl") for rel in files) and len(files) == PACK_ABOVE
    assert run.load_chunk(PACK_ABOVE - 1) == blobs[PACK_ABOVE - 1]


def test_a_packed_chunk_changed_or_moved_is_refused_naming_the_pack(tmp_path: Path) -> None:
    import json

    from remotemap.chunk_packs import pack_name
    from remotemap.errors import TamperedFile

    blobs = {file: f"task {file}".encode() for file in range(20)}
    run, _ = _pack_run(tmp_path, blobs)
    pack = tmp_path / pack_name(0, 19)
    data = bytearray(pack.read_bytes())
    size = int.from_bytes(data[:8], "big")
    index = json.loads(data[8:8 + size])
    index["4"], index["5"] = index["5"], index["4"]  # chunk 4 pointed at chunk 5's content
    head = json.dumps(index).encode()
    pack.write_bytes(len(head).to_bytes(8, "big") + head + data[8 + size:])
    with pytest.raises(TamperedFile, match=str(pack)):
        run.load_chunk(4)
    assert run.load_chunk(6) == blobs[6]
    data = bytearray(pack.read_bytes())
    data[-1] ^= 1  # the last chunk's last byte
    pack.write_bytes(bytes(data))
    with pytest.raises(TamperedFile, match=str(pack)):
        run.load_chunk(19)
    pack.write_bytes(b"\x00" * 7 + b"\x05" + b"[1,2]" + bytes(data[8 + size:]))
    (tmp_path / "again").mkdir()
    run, _ = _pack_run(tmp_path / "again", blobs)  # a reader that has not read the index
    (tmp_path / "again" / pack_name(0, 19)).write_bytes(pack.read_bytes())
    with pytest.raises(TamperedFile, match="again"):
        run.load_chunk(3)  # an index that is not one names the pack too


def test_a_round_of_worker_jobs_packs_its_chunks_and_links_its_markers(
        local: dict[str, Any]) -> None:
    results = remote_map(tf.square, [(i,) for i in range(30)], dispatch="workers",
                         worker_jobs=2, keep_files=True, **local)
    assert results == [i * i for i in range(30)]
    run = max(Path(local["shared_dir"]).iterdir(), key=lambda p: p.stat().st_mtime)
    assert os.listdir(run / "chunks") == ["000000-000029.pack"]
    source = (run / "rounds" / "0.marker").stat()
    claimed = [(run / CLAIMED / name).stat().st_ino for name in os.listdir(run / CLAIMED)]
    assert len(claimed) == 30 and set(claimed) == {source.st_ino}


def test_the_engines_remove_a_finished_run_after_the_caller_returned(
        local: dict[str, Any], state_home: Path) -> None:
    """Every task has its outcome: the call returns without waiting for its engines to see
    the jobs end, and the last engine to exit removes the directory, key and registry entry."""
    from remotemap.backends.cluster.handover import REQUEST
    from remotemap.backends.cluster.registry import registered
    from tests.cluster_support import no_engine_left, wait_for

    before = {e["run_id"] for e in registered()}
    assert remote_map(tf.square, [(i,) for i in range(12)], tasks_per_job=4, **local) == \
        [i * i for i in range(12)]
    # Left to the engines (the run still registered, with the request), or removed already
    # by the caller (every engine had exited: then the registry has nothing new).
    entries = [e for e in registered() if e["run_id"] not in before]
    roots = [Path(e["root"]) for e in entries]
    keys = [state_home / "remotemap" / "keys" / f"{e['run_id']}.key" for e in entries]
    assert len(entries) <= 1 and all((r / REQUEST).exists() for r in roots)
    assert all(key.exists() for key in keys)
    wait_for("the run directory to go", lambda: not any(r.exists() for r in roots))
    wait_for("the registry entry to go",
             lambda: all(e["run_id"] in before for e in registered()))
    assert not any(key.exists() for key in keys)
    no_engine_left(Path(local["shared_dir"]))


def test_the_last_engine_out_removes_the_run_only_when_asked(tmp_path: Path) -> None:
    import json

    from remotemap.backends.cluster.handover import REQUEST, remove_if_asked, request_body

    root, key, entry = tmp_path / "run", tmp_path / "run.key", tmp_path / "run.json"
    (root / "rounds").mkdir(parents=True)
    root.chmod(0o700)
    key.write_text("k")
    entry.write_text("{}")

    def status(rnd: int, **fields: Any) -> None:
        (root / "rounds" / f"{rnd}.json").write_text("{}")
        (root / "rounds" / f"{rnd}.status.json").write_text(json.dumps(fields))

    status(0, ended=True, exited=True)
    status(1, ended=True)  # its engine is still stopping soma-workflow
    assert not remove_if_asked(str(root))  # not asked
    (root / REQUEST).write_bytes(request_body([str(key), str(entry)]))
    assert not remove_if_asked(str(root)) and root.exists()  # round 1's engine still runs
    status(1, ended=True, state="error")  # an engine that failed will not run again
    root.chmod(0o755)
    assert not remove_if_asked(str(root)) and root.exists()  # not a private directory
    root.chmod(0o700)
    assert remove_if_asked(str(root))
    assert not root.exists() and not key.exists() and not entry.exists()
