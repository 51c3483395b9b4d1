"""The integrity primitives: sealed files and the rule for directories others could change."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from remotemap.errors import TamperedFile, UnsafePath
from remotemap.integrity import (
    check_parent_for_new_dir,
    check_private_dir,
    check_same_dir,
    identity,
    new_key,
    seal,
    unsafe_reason,
    unseal,
)


def test_a_sealed_blob_opens_with_its_key_only() -> None:
    key = new_key()
    blob = seal(key, b"payload")
    assert bytes(unseal(key, blob, "f")) == b"payload"
    with pytest.raises(TamperedFile, match="f failed its integrity check"):
        unseal(new_key(), blob, "f")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(TamperedFile):
        unseal(key, flipped, "f")
    with pytest.raises(TamperedFile):
        unseal(key, b"short", "f")


def test_the_rule_for_a_directory_and_its_ancestors() -> None:
    me, other = 1000, 1001
    private = stat.S_IFDIR | 0o700
    assert unsafe_reason("/d", private, me, me=me, ancestor=False) is None
    assert "owned by uid 1001" in str(unsafe_reason("/d", private, other, me=me, ancestor=False))
    assert "owned by uid 0" in str(unsafe_reason("/d", private, 0, me=me, ancestor=False))
    assert unsafe_reason("/", stat.S_IFDIR | 0o755, 0, me=me, ancestor=True) is None
    tmp = stat.S_IFDIR | stat.S_ISVTX | 0o777
    assert unsafe_reason("/tmp", tmp, 0, me=me, ancestor=True) is None
    assert "written by others" in str(unsafe_reason("/tmp", tmp, me, me=me, ancestor=False))
    open_dir = stat.S_IFDIR | 0o777
    assert "mode 0777" in str(unsafe_reason("/shared", open_dir, me, me=me, ancestor=True))
    group = stat.S_IFDIR | 0o770
    assert "its group" in str(unsafe_reason("/g", group, me, me=me, ancestor=True))


def test_directories_on_disk(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tmp_path.chmod(0o755)
    check_private_dir(str(private))
    check_parent_for_new_dir(str(private))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    inside = shared / "run"
    inside.mkdir(mode=0o700)
    with pytest.raises(UnsafePath, match="shared can be written by others"):
        check_private_dir(str(inside))
    with pytest.raises(UnsafePath) as info:
        check_parent_for_new_dir(str(shared))
    assert info.value.path == str(shared)
    shared.chmod(0o777 | stat.S_ISVTX)
    check_parent_for_new_dir(str(shared))
    check_private_dir(str(inside))
    if os.geteuid() == 0:
        os.chown(inside, 65534, 65534)
        with pytest.raises(UnsafePath, match="owned by uid 65534"):
            check_private_dir(str(inside))


def test_a_swapped_directory_is_noticed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    before = identity(str(run))
    check_same_dir(str(run), before)
    run.rename(tmp_path / "moved")
    (tmp_path / "run").mkdir()
    with pytest.raises(UnsafePath, match="replaced by another directory"):
        check_same_dir(str(run), before)
    (tmp_path / "run").rmdir()
    with pytest.raises(UnsafePath, match="is gone"):
        check_same_dir(str(run), before)
