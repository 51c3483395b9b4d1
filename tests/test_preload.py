"""The worker server imports, before forking a chunk's child, the modules the chunk's pickle
names (``remotemap.preload``), so that ``Executor`` chunks, which carry their own callables,
do not import them again in every child; ``preload=False`` turns it off."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest

from remotemap import Executor
from remotemap.execution import dumps
from remotemap.preload import Preloader, referenced_modules
from remotemap.protocol import FUNCTION, chunk_name, create_local_run_dir, encode_chunk, seal_file
from remotemap.tasks import Chunk
from tests import taskfuncs as tf

#: The environment variable naming the file a marker module appends its importer's pid to.
RECORD = "REMOTEMAP_TEST_MARKER_RECORD"

# A module that records each import of it, with the importing pid (when RECORD is set: the
# worker servers get it through ``env``, this process does not).
_MARKER = textwrap.dedent(f"""
    import os

    IMPORTED_IN = os.getpid()
    _record = os.environ.get({RECORD!r})
    if _record:
        with open(_record, "a") as f:
            f.write(f"{{IMPORTED_IN}}\\n")


    def probe(_=None):
        return os.getpid(), IMPORTED_IN


    class Thing:
        pass
""")


class Marker:
    """A marker module written to a directory of its own, imported here."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.name = f"preload_marker_{uuid.uuid4().hex[:12]}"
        self.dir = directory
        (directory / f"{self.name}.py").write_text(_MARKER)
        self.record = directory / "imports.txt"
        monkeypatch.syspath_prepend(str(directory))
        self.module: ModuleType = __import__(self.name)
        assert self.module.__name__ == self.name

    def importers(self) -> list[int]:
        """The pids that imported the module where RECORD was set, in order."""
        if not self.record.exists():
            return []
        return [int(line) for line in self.record.read_text().split()]

    def close(self) -> None:
        sys.modules.pop(self.name, None)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Marker]:
    made = Marker(tmp_path, monkeypatch)
    yield made
    made.close()


# --- the scanner, on real cloudpickle output -----------------------------------------------------


def _executor_style(function: Any, *args: Any) -> tuple[list[Any], list[Any]]:
    """What an Executor's chunk holds: the task's callable and arguments as the arguments of a
    generic caller (the function file's)."""
    return [(function, args, {})], [{}]


def test_scanner_finds_by_reference_and_by_value_modules_in_nested_containers(
        marker: Marker) -> None:
    import json

    by_value = lambda x: json.dumps(x)  # noqa: E731 - a lambda is pickled by value
    payload = _executor_style(marker.module.probe, {"deep": [(marker.module.Thing(),)]},
                              collections.OrderedDict(f=by_value))
    data = encode_chunk("tok", Chunk(0, [0], *payload))  # two pickles back to back
    found = referenced_modules(data)
    assert marker.name in found  # probe by reference, Thing's class for its instance
    assert "json" in found  # by value: the lambda's global, a cloudpickle subimport
    assert "collections" in found
    assert "cloudpickle.cloudpickle" in found  # what rebuilds the lambda
    assert "tests.test_preload" not in found  # the lambda's __module__ is a string, not a load
    assert set(referenced_modules(cloudpickle.dumps(payload))) <= set(found)


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_scanner_reads_every_protocol(marker: Marker, protocol: int) -> None:
    import json

    by_value = lambda: json  # noqa: E731
    found = referenced_modules(cloudpickle.dumps([marker.module.Thing(), by_value],
                                                 protocol=protocol))
    assert marker.name in found and "json" in found


def test_scanner_skips_array_data_and_stops_at_a_broken_pickle() -> None:
    big = bytes(50_000_000)
    data = dumps(([big, collections.Counter("ab")], {}))
    assert referenced_modules(data) == ["collections"]
    # Cut short after the global: what was found stands, nothing raises.
    cut = data[: data.index(b"Counter") + 20]
    assert referenced_modules(cut) == ["collections"]
    assert referenced_modules(b"not a pickle") == []


def test_preloader_imports_once_and_survives_a_failing_module(tmp_path: Path,
                                                              marker: Marker) -> None:
    broken = f"preload_broken_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{broken}.py").write_text("raise RuntimeError('no')\n")
    data = cloudpickle.dumps(marker.module.Thing()) + _global_of(broken)
    sys.modules.pop(marker.name)  # as in a server that has not imported it yet
    preloader = Preloader()
    assert preloader.preload(data) == [marker.name]
    assert marker.name in sys.modules and broken not in sys.modules
    assert preloader.preload(data) == []  # tried once: neither is imported again
    assert broken in preloader.tried


def _global_of(module: str) -> bytes:
    """A protocol-4 pickle naming ``module.anything`` (a global that fails to import)."""
    return b"\x80\x04\x8c" + bytes([len(module)]) + module.encode() + b"\x8c\x01x\x93."


# --- a real run: local_with_dumps ----------------------------------------------------------------


@pytest.mark.parametrize("preload", [True, False])
def test_dumps_children_inherit_the_chunks_modules(marker: Marker, preload: bool) -> None:
    with Executor("local_with_dumps", n_jobs=2, preload=preload,
                  env={RECORD: str(marker.record)}) as ex:
        seen = [f.result(timeout=60) for f in [ex.submit(marker.module.probe) for _ in range(4)]]
    _check_imports(seen, marker.importers(), preload)


def _check_imports(seen: list[tuple[int, int]], importers: list[int], preload: bool) -> None:
    task_pids = {pid for pid, _ in seen}
    assert len(task_pids) == 4  # a process each
    if preload:  # once, in the server: no task's own process imported it
        assert len(importers) == 1
        assert {imported for _, imported in seen} == set(importers)
        assert not task_pids & set(importers)
    else:  # once per child, in the child
        assert sorted(importers) == sorted(task_pids)
        assert all(pid == imported for pid, imported in seen)


# --- a real run: ssh -----------------------------------------------------------------------------


@pytest.mark.ssh
def test_ssh_children_inherit_the_chunks_modules(sshd_host: Any, remote_python: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The host's user must read the module and append to the record: not under pytest's
    # private tmp_path. The host's venv has remotemap only: the module is found by PYTHONPATH.
    directory = Path(tempfile.mkdtemp(prefix="remotemap-preload-"))
    made = Marker(directory, monkeypatch)
    try:
        directory.chmod(0o755)
        made.record.touch(0o666)
        made.record.chmod(0o666)
        env = {RECORD: str(made.record), "PYTHONPATH": str(directory)}
        with Executor("ssh", hosts=[sshd_host.alias], ssh_config=str(sshd_host.ssh_config),
                      python=str(remote_python), n_jobs=2, env=env) as ex:
            seen = [f.result(timeout=120) for f in [ex.submit(made.module.probe)
                                                     for _ in range(4)]]
        _check_imports(seen, made.importers(), preload=True)
    finally:
        made.close()
        shutil.rmtree(directory, ignore_errors=True)


# --- a tampered chunk is never looked into -------------------------------------------------------


KEY = bytes(range(32))


@pytest.mark.parametrize("preload", [True, False])
def test_tampered_chunk_is_not_scanned_and_fails_as_before(marker: Marker, preload: bool) -> None:
    layout, rundir = create_local_run_dir()
    try:
        rundir.write(FUNCTION, seal_file(KEY, FUNCTION, dumps(tf.square)))
        name = chunk_name(0)
        chunk = encode_chunk("tok", Chunk(0, [0], [(marker.module.Thing(),)], [{}]))
        assert marker.name in referenced_modules(chunk)
        sealed = bytearray(seal_file(KEY, name, chunk))
        sealed[-2] ^= 1  # one bit of the content flipped after sealing
        rundir.write(name, bytes(sealed))
        flags = [] if preload else ["--no-preload"]
        done = _serve_one_chunk(layout.root, flags, {RECORD: str(marker.record)})
        log = Path(layout.log(0)).read_text()
    finally:
        rundir.remove()
        rundir.close()
    assert done == b"done 0 exit:70\n"  # the child refused it, as before
    assert "TamperedFile" in log and "chunks/000000.pkl" in log
    assert marker.importers() == []  # neither the server nor the child imported the module


def _serve_one_chunk(root: str, flags: list[str], env: dict[str, str]) -> bytes:
    """Run chunk 0 through a worker server; its ``done`` line."""
    proc = subprocess.Popen([sys.executable, "-m", "remotemap.worker", "serve", root, *flags],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, **env})
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"key {KEY.hex()}\nrun 0\n".encode())
    proc.stdin.flush()
    try:
        assert proc.stdout.readline().startswith(b"ready ")
        return proc.stdout.readline()
    finally:
        proc.stdin.close()  # then the server exits
        assert proc.wait(timeout=30) == 0
