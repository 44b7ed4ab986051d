"""Issue 9 item 7: silent corruption is caught. make-shards records a checksum of every stored image; the loader
checks it as it reads (one flipped byte inside an image is a corrupt sample, never delivered silently)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOutputs
from shardkit import TinyRecipe

from pass_wds.format.manifest import load_index
from pass_wds.loading import LoaderConfig, SampleError, make_loader


@pytest.fixture(scope="module")
def fresh(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB", n_images=24)


def images(out: Path) -> list[tuple[str, str, int, bytes, dict[str, Any]]]:
    """(shard, key, data offset, image bytes, json) of every sample."""
    found = []
    for entry in load_index(str(out))["shardlist"]:
        with tarfile.open(out / entry["url"]) as tf:
            ms = tf.getmembers()
            for img, meta in zip(ms[::2], ms[1::2], strict=True):
                data = tf.extractfile(img).read()  # type: ignore[union-attr]
                found.append(
                    (
                        entry["url"],
                        img.name.split(".")[0],
                        img.offset_data,
                        data,
                        json.loads(tf.extractfile(meta).read()),
                    )
                )  # type: ignore[union-attr]
    return found


def test_every_sample_records_the_checksum_of_its_stored_image(fresh: Path) -> None:
    for _, key, _, data, meta in images(fresh):
        prov = meta["_provenance"]
        assert prov["crc32"] == f"{zlib.crc32(data):08x}", key
        assert prov["bytes"] == len(data)


def corrupt_copy(fresh: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of ``fresh`` with one byte flipped in the middle of one JPEG's entropy-coded data: it still
    decodes (to slightly wrong pixels), so only the checksum can tell."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(fresh, out)
    shard, key, offset, data, _ = images(out)[3]
    pos = offset + len(data) // 2
    raw = bytearray((out / shard).read_bytes())
    raw[pos] ^= 0x10
    (out / shard).write_bytes(bytes(raw))
    return out, shard, key


def _keys(loader: Any) -> list[str]:
    return [k for b in loader for k in b["__key__"]]


def test_a_flipped_byte_is_never_delivered_silently(
    fresh: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, shard, key = corrupt_copy(fresh, tmp_path)
    src = str(out / "index.json")
    total = load_index(str(out))["totals"]["samples"]
    kw: dict[str, Any] = dict(
        batch_size=4, num_workers=0, recipe=TinyRecipe(), shuffle=False, remainder="pad"
    )

    # Without the check, the damaged image decodes and is delivered: the check is what catches it.
    unchecked = make_loader(src, verify_samples=False, **kw)
    assert key in _keys(unchecked) and unchecked.stats.errors == 0

    with pytest.raises(SampleError, match=rf"{key}.*{shard}.*crc32"):
        _keys(make_loader(src, on_error="raise", **kw))

    caplog.set_level(logging.WARNING, logger="pass_wds")
    loader = make_loader(src, **kw)
    got = _keys(loader)
    assert key not in got and len(got) >= total - 1
    assert loader.stats.errors == 1 and loader.stats.bad[0]["key"] == key
    assert loader.stats.bad[0]["reason"] == "checksum-mismatch"
    warned = [r.getMessage() for r in caplog.records if "crc32" in r.getMessage()]
    assert len(warned) == 1 and shard in warned[0], warned


def test_corrupt_samples_are_warned_once_per_shard(
    fresh: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, shard, first = corrupt_copy(fresh, tmp_path)
    victims = [s for s in images(out) if s[0] == shard and s[1] != first][:2]
    assert len(victims) == 2
    raw = bytearray((out / shard).read_bytes())
    for _, _, offset, data, _ in victims:
        raw[offset + len(data) // 2] ^= 0x01
    (out / shard).write_bytes(bytes(raw))
    caplog.set_level(logging.WARNING, logger="pass_wds")
    loader = make_loader(str(out / "index.json"), batch_size=1, num_workers=0, recipe=TinyRecipe())
    _keys(loader)
    assert loader.stats.errors == 3
    assert len([r for r in caplog.records if "crc32" in r.getMessage()]) == 1


def test_checked_in_dataloader_workers_too(fresh: Path, tmp_path: Path) -> None:
    out, _, key = corrupt_copy(fresh, tmp_path)
    loader = make_loader(
        str(out / "index.json"), batch_size=4, num_workers=2, recipe=TinyRecipe(), remainder="pad"
    )
    assert key not in _keys(loader) and loader.stats.errors == 1


def test_undecoded_batches_are_checked(fresh: Path, tmp_path: Path) -> None:
    out, _, key = corrupt_copy(fresh, tmp_path)
    with pytest.raises(SampleError, match="crc32"):
        _keys(
            make_loader(
                str(out / "index.json"), batch_size=4, num_workers=0, on_error="raise", remainder="pad"
            )
        )
    loader = make_loader(str(out / "index.json"), batch_size=4, num_workers=0, remainder="pad")
    _keys(loader)
    assert loader.stats.errors == 1 and loader.stats.bad[0]["key"] == key


def test_verify_samples_is_a_config_field() -> None:
    assert LoaderConfig().verify_samples is True
    assert (
        "verify_samples"
        in Path(__file__).resolve().parent.parent.joinpath("configs", "loader.yaml").read_text()
    )


def test_reencoded_samples_record_the_stored_bytes(tmp_path: Path) -> None:
    from test_trust_metadata import jpeg

    from pass_wds import ConvertConfig, make_shards

    with tarfile.open(tmp_path / "raw.tar", "w") as tf:
        for i in range(3):
            data = jpeg(i)
            info = tarfile.TarInfo(f"d/k{i}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    make_shards(
        ConvertConfig(
            inputs=[str(tmp_path / "raw.tar")],
            output=str(out),
            allow_missing_metadata=True,
            quality=50,
            progress=False,
        )
    )
    for _, _, _, data, meta in images(out):
        assert meta["_provenance"]["crc32"] == f"{zlib.crc32(data):08x}"
