"""Large results and arguments travel out of band: raw files beside the sealed pickle.

Over ssh (the loopback host, through the OpenSSH lane; the isolated host, by SFTP through its
ProxyCommand) a large ``bytes`` result and a large ``bytearray`` argument come back exactly;
their buffers really went as files of their own; a buffer file of the wrong size is refused
naming it; small results keep the plain outcome.
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from remotemap import remote_map
from remotemap.backends.remote_files import RemoteRun
from remotemap.errors import TamperedFile
from remotemap.execution import dumps_result
from remotemap.integrity import new_key
from remotemap.outofband import OUT_OF_BAND_MIN
from remotemap.protocol import (
    BUFFERS_MAGIC,
    RunLayout,
    buffer_path,
    create_local_run_dir,
    decode_chunk,
    encode_chunk,
    open_outcome,
    outcome_name,
    seal_parts,
    write_outcome_parts,
)
from remotemap.ssh import transfer
from remotemap.tasks import Chunk, ChunkResult
from tests.infra.sshd import SSHServer
from tests.isolated_fixtures import IsolatedSSHHost
from tests.ssh_connection_support import connect

# The hosts have remotemap but not this test suite: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SIZE = 21 * 10**6 + 7  # past the out-of-band threshold, not a multiple of any block


def _blob(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def _reverse(data: bytearray, seed: int) -> tuple[str, list[str], bytes]:
    """The argument's type, the raw buffer files of the chunks (the task runs in RUN/work/N),
    and a large result of its own."""
    chunks = os.path.join(os.getcwd(), os.pardir, os.pardir, "chunks")
    files = sorted(n for n in os.listdir(chunks) if n.endswith(".buf"))
    return type(data).__name__, files, bytes(data[::-1]) + _blob(seed, 3)


def _outcome_buffers_and_remove(parent: str) -> list[str]:
    """The outcome buffer files left in the run directories under ``parent``, which goes."""
    import shutil

    found = [name for root, _, names in os.walk(parent) for name in names
             if name.endswith(".buf") and os.path.basename(root) == "outcomes"]
    shutil.rmtree(parent)
    return sorted(found)


def _round_trip(options: dict[str, Any], kept_in: str) -> None:
    args = [(bytearray(_blob(i)), i) for i in range(2)]
    got = remote_map(_reverse, args, mode="ssh", progress=False, chunksize=1,
                     fetch=["no-such-file"], keep_remote_files=True,
                     **{**options, "remote_dir": kept_in})  # fmt: skip
    assert len(got) == 2
    for (data, seed), (kind, files, back) in zip(args, got, strict=True):
        assert kind == "bytearray"
        assert files, "the argument did not come as a raw buffer file"
        assert type(back) is bytes and back == bytes(data[::-1]) + _blob(seed, 3)
    # One buffer file per outcome, beside it; then the kept run directories go.
    left = remote_map(_outcome_buffers_and_remove, [(kept_in,)], mode="ssh", progress=False,
                      **options)[0]
    assert left == ["000000.pkl.0.buf", "000001.pkl.0.buf"], left


@pytest.mark.ssh
def test_large_bytes_result_and_bytearray_argument_round_trip_over_the_openssh_lane(
        sshd_host: SSHServer, remote_python: Path) -> None:
    options = {"hosts": [sshd_host.alias], "ssh_config": str(sshd_host.ssh_config),
               "python": str(remote_python)}
    _round_trip(options, f".cache/remotemap/large-{uuid.uuid4().hex[:8]}")


@pytest.mark.ssh
def test_large_bytes_result_and_bytearray_argument_round_trip_on_the_isolated_host(
        isolated_ssh_host: IsolatedSSHHost) -> None:
    kept_in = f"{isolated_ssh_host.home}/.cache/remotemap/large-{uuid.uuid4().hex[:8]}"
    _round_trip(isolated_ssh_host.options(), kept_in)


@pytest.mark.ssh
def test_an_outcome_buffer_of_another_size_is_refused_naming_it(sshd_host: SSHServer) -> None:
    with connect(sshd_host) as conn:
        conn.makedirs_private("oob")
        try:
            run = RemoteRun(sshd_host.alias, {}, b"", None)  # type: ignore[arg-type]
            run.connection, run.layout = conn, RunLayout(conn.sftp().normalize("oob"))
            outcome = run.layout.outcome(5)
            conn.makedirs_private(os.path.dirname(outcome))
            data = _blob(1, OUT_OF_BAND_MIN + 10)
            transfer.put_bytes(conn, buffer_path(outcome, 0), data)
            fetch = run._fetch_buffers(5)
            assert bytes(fetch([len(data)])[0]) == data  # the right size: taken as it is
            with pytest.raises(TamperedFile) as refused:
                fetch([len(data) - 1])
            assert refused.value.path == f"{sshd_host.alias}:{buffer_path(outcome, 0)}"
            conn.remove(buffer_path(outcome, 0))  # gone altogether: refused the same way
            with pytest.raises(TamperedFile) as refused:
                fetch([len(data)])
            assert refused.value.path == f"{sshd_host.alias}:{buffer_path(outcome, 0)}"
        finally:
            conn.remove_tree("oob")


def _result(values: list[Any]) -> ChunkResult:
    result = ChunkResult(3)
    result.indices, result.values = list(range(len(values))), values
    return result


def test_a_local_outcome_buffer_cut_short_or_grown_is_refused_naming_it(tmp_path: Path) -> None:
    layout, rundir = create_local_run_dir(str(tmp_path))  # not /tmp: nothing removes it
    key = new_key()
    parts = write_outcome_parts(rundir, key, _result([_blob(2, OUT_OF_BAND_MIN), 7]), "tok")
    rundir.write(outcome_name(3), *parts)
    blob = Path(layout.outcome(3)).read_bytes()
    assert blob[32:].startswith(BUFFERS_MAGIC) and len(blob) < 1000  # the data is not in it
    assert open_outcome(key, 3, blob, "tok", layout.outcome(3)).values == [  # type: ignore[union-attr]
        _blob(2, OUT_OF_BAND_MIN), 7]
    buffer = Path(buffer_path(layout.outcome(3), 0))
    data = _blob(2, OUT_OF_BAND_MIN)
    for changed in (data[:-1], data + b"x"):  # cut short, grown
        buffer.write_bytes(changed)
        with pytest.raises(TamperedFile) as refused:
            open_outcome(key, 3, blob, "tok", layout.outcome(3))
        assert refused.value.path == str(buffer)
    buffer.unlink()  # gone altogether: refused the same way
    with pytest.raises(TamperedFile) as refused:
        open_outcome(key, 3, blob, "tok", layout.outcome(3))
    assert refused.value.path == str(buffer)


def test_an_argument_buffer_of_another_size_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "arg.buf"
    path.write_bytes(b"1234")
    chunk = Chunk(1, [0], [(1,)], [{}])
    data = encode_chunk("tok", chunk, lambda c: (b"", [str(path)]), {"buffer_sizes": [5]})
    with pytest.raises(TamperedFile) as refused:
        decode_chunk(data)
    assert refused.value.path == str(path)


def test_small_results_keep_the_plain_outcome_and_no_buffer_file(tmp_path: Path) -> None:
    layout, rundir = create_local_run_dir(str(tmp_path))  # not /tmp: nothing removes it
    key = new_key()
    small = _result([1, "two", b"three" * 1000, 4.0])
    plain = seal_parts(key, outcome_name(3), dumps_result(_result(list(small.values)), "tok"))
    assert write_outcome_parts(rundir, key, small, "tok") == plain
    assert os.listdir(os.path.dirname(layout.outcome(3))) == []
