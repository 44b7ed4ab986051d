"""pass_wds.storage on local disk and on a generic fsspec store (memory://, no server needed)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pass_wds import storage


def test_local_atomic_write_and_ranges(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    data = os.urandom(100_000)
    storage.write_bytes(str(target), data)
    assert target.read_bytes() == data
    with pytest.raises(RuntimeError), storage.atomic_write(str(tmp_path / "sub" / "b.bin")) as f:
        f.write(b"partial")
        raise RuntimeError("writer failed")
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.bin"]  # no temp file, no partial object
    with storage.open_stream(str(target), 10, 60_010) as f:
        assert f.read(5) == data[10:15] and f.read() == data[15:60_010]
    with storage.open_stream(f"file://{target}", 99_990) as f:
        assert f.read() == data[99_990:]
    (tmp_path / "sub" / f"c.bin{storage.TMP_MARK}0123456789ab").write_bytes(b"x")
    (tmp_path / "sub" / f"d.bin{storage.TMP_MARK}0123456789ab").write_bytes(b"not ours")
    (tmp_path / "sub" / f"notes{storage.TMP_MARK}draft").write_bytes(b"not a temp file of ours")
    removed = storage.remove_temp_files(str(tmp_path / "sub"), names={"c.bin"})
    assert removed == [f"c.bin{storage.TMP_MARK}0123456789ab"]
    assert (tmp_path / "sub" / f"d.bin{storage.TMP_MARK}0123456789ab").exists()
    with pytest.raises(storage.StorageNotFoundError, match="not found"):
        storage.read_bytes(str(tmp_path / "missing.bin"))
    with pytest.raises(ValueError):
        storage.open_stream(str(target), 10, 5)


def test_generic_fsspec_store_round_trip() -> None:
    base = f"memory://pwds-{uuid.uuid4().hex[:8]}"
    data = os.urandom(50_000)
    storage.write_bytes(f"{base}/x.bin", data)
    assert storage.read_bytes(f"{base}/x.bin") == data
    assert storage.file_size(f"{base}/x.bin") == len(data)
    with storage.open_stream(f"{base}/x.bin", 100, 40_000) as f:
        assert f.read() == data[100:40_000]
    with pytest.raises(RuntimeError), storage.atomic_write(f"{base}/y.bin") as f:
        f.write(b"partial")
        raise RuntimeError("writer failed")
    assert storage.listdir(base) == ["x.bin"]  # a store without discard: the partial object is removed


def test_join_and_is_local() -> None:
    assert storage.join("s3://b/p/", "x.tar") == "s3://b/p/x.tar"
    assert storage.join("/data/out", "x.tar") == "/data/out/x.tar"
    assert storage.is_local("/x") and storage.is_local("file:///x") and not storage.is_local("s3://b/x")
