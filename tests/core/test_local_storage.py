"""The directory adapter when the directory itself refuses: one StorageFault naming the key,
the directory and the cause; no temp file left; reads of a missing key stay NoSuchKey."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fanout_core.errors import StorageFault
from fanout_core.storage import LocalDirStorage, NoSuchKey


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".fanout-tmp")]


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES"])
@pytest.mark.parametrize("write", ["put", "put_if_absent"])
def test_a_write_the_disk_refuses_is_a_storage_fault_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, write: str
) -> None:
    store = LocalDirStorage(tmp_path / "b")
    number = getattr(errno, code)

    def refuse(*_args: object) -> None:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(os, "replace" if write == "put" else "link", refuse)
    with pytest.raises(StorageFault, match=rf"cannot write a/x\.json in the bucket directory .*\({code}\)"):
        getattr(store, write)("a/x.json", b"{}")
    assert temp_files(tmp_path) == []


def test_a_file_where_a_folder_should_be_is_a_storage_fault(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path / "b")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "a").write_bytes(b"")
    with pytest.raises(StorageFault, match=r"\(EEXIST\)|\(ENOTDIR\)"):
        store.put("a/x.json", b"{}")
    with pytest.raises(NoSuchKey):
        store.get("a/x.json")


def test_a_bucket_directory_that_is_a_file_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(StorageFault, match="is a file, not a directory"):
        LocalDirStorage(tmp_path / "f")


def test_opening_a_bucket_to_read_it_creates_nothing(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path / "not" / "yet")
    assert list(store.list("done/")) == []
    assert not store.exists("a.json")
    assert not (tmp_path / "not").exists()
    store.put("a.json", b"{}")
    assert store.get("a.json") == b"{}"
