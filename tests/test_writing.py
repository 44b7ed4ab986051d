"""The shard writer: deterministic ustar bytes, a correct DALI index, and honest image classification."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from pass_wds.convert.writing import ShardTask, TarWriter, TaskItem, WriteOptions, write_shard
from pass_wds.format import keys, reasons
from pass_wds.format.idx import parse_idx
from pass_wds.format.tar import MTIME
from pass_wds.imaging import Rejected, inspect_image, reencode


def _jpeg(w: int = 64, h: int = 48, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 40)).save(buf, "JPEG", **save)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (10, 20), (1, 2, 3, 4)).save(buf, "PNG")
    return buf.getvalue()


def _folder(tmp_path: Path, files: dict[str, bytes]) -> list[TaskItem]:
    items = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        items.append(
            TaskItem(
                keys.key_of(name), str(tmp_path / name), "src", name, 0, len(data), False, f'"id":"{name}"'
            )
        )
    return items


def test_shard_bytes_header_fields_and_idx(tmp_path: Path) -> None:
    items = _folder(tmp_path, {"a.jpeg": _jpeg(), "b.jpeg": _png(), "c.jpeg": b"not an image"})
    task = ShardTask(
        0, str(tmp_path / "s.tar"), str(tmp_path / "s.idx"), items, WriteOptions(attribution_columns=("id",))
    )
    result = write_shard(task)
    data = (tmp_path / "s.tar").read_bytes()
    assert result.nsamples == 2 and result.filesize == len(data) and len(data) % 512 == 0
    assert [r["reason"] for r in result.rejections] == [reasons.NOT_AN_IMAGE]
    with tarfile.open(tmp_path / "s.tar") as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == [
            "a.jpg",
            "a.json",
            "b.png",
            "b.json",
        ]  # PNG bytes never go under .jpg
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.mode, m.uname, m.gname) == (MTIME, 0, 0, 0o644, "", "")
        meta = json.load(tf.extractfile("b.json"))  # type: ignore[arg-type]
    assert meta["id"] == "b.jpeg"
    assert meta["_provenance"] == {
        "key": "b",
        "source": "src",
        "member": "b.jpeg",
        "width": 10,
        "height": 20,
        "format": "PNG",
        "bytes": len(_png()),
        "crc32": f"{zlib.crc32(_png()):08x}",
    }
    idx = parse_idx((tmp_path / "s.idx").read_text())  # the loader's reader of the format
    assert idx.keys == ["a", "b"]
    for key, members in zip(idx.keys, idx.members, strict=True):
        for ext, off, _size in members:
            name = f"{key}.{ext}"
            assert data[off - 512 : off - 512 + len(name)] == name.encode()  # header precedes data
    (ext, off, size), _json = idx.members[0]
    assert data[off : off + size] == _jpeg()  # original bytes, lossless
    assert result.attribution == [["a", "a.jpeg"], ["b", "b.jpeg"]]


def test_same_task_same_bytes(tmp_path: Path) -> None:
    items = _folder(tmp_path, {"a.jpeg": _jpeg(), "b.jpeg": _jpeg(30, 30)})
    outs = []
    for i in range(2):
        write_shard(
            ShardTask(0, str(tmp_path / f"{i}.tar"), str(tmp_path / f"{i}.idx"), items, WriteOptions())
        )
        outs.append((tmp_path / f"{i}.tar").read_bytes())
    assert outs[0] == outs[1]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", reasons.EMPTY),
        (b"hello world, not an image", reasons.NOT_AN_IMAGE),
        (_jpeg(200, 200)[:-400], reasons.CORRUPT),
    ],
)
def test_inspect_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as e:
        inspect_image(data, validate=True, max_pixels=10**8)
    assert e.value.reason == reason


def test_truncation_is_only_seen_with_validation() -> None:
    data = _jpeg(200, 200)[:-400]
    assert inspect_image(data, validate=False, max_pixels=10**8).format == "JPEG"


def test_decompression_bomb_limit_is_per_call_and_restored() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(Rejected) as e:
        inspect_image(_jpeg(100, 100), validate=True, max_pixels=5000)  # 10,000 px > limit (warning range)
    assert e.value.reason == reasons.BOMB
    assert Image.MAX_IMAGE_PIXELS == before
    assert inspect_image(_jpeg(100, 100), validate=True, max_pixels=20_000).width == 100


def test_valid_variants_are_kept() -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 50, 100, 0)).save(buf, "JPEG")
    assert inspect_image(buf.getvalue(), validate=True, max_pixels=10**8).ext == "jpg"
    buf = io.BytesIO()
    Image.new("L", (40, 30), 9).save(buf, "JPEG", progressive=True)
    assert inspect_image(buf.getvalue(), validate=True, max_pixels=10**8).ext == "jpg"


def test_reencode_orients_and_shrinks() -> None:
    im = Image.new("RGB", (1000, 400), (10, 20, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    out, w, h = reencode(buf.getvalue(), max_side=250, quality=90)
    assert (w, h) == (100, 250)
    assert Image.open(io.BytesIO(out)).size == (100, 250)
    assert reencode(buf.getvalue(), max_side=250, quality=90)[0] == out


@pytest.mark.parametrize(
    ("key", "member", "row"),
    [("abc", "d/abc.jpeg", '"a":1'), ('é"\\x', 'dir/é"\\x.jpg', None), ("k", "k.png", '"t":"漢字 🙂\\n"')],
)
def test_json_size_estimate_is_exact_for_four_digit_sizes(key: str, member: str, row: str | None) -> None:
    from pass_wds.format.samples import build_sample_json, estimate_json_size, provenance

    prov = provenance(key, "PASS.0.tar", member, width=1000, height=2000, format="JPEG", data=bytes(12345))
    actual = len(build_sample_json(row, prov))
    row_bytes = len(row.encode()) if row is not None else None
    assert estimate_json_size(key, "PASS.0.tar", member, 12345, row_bytes) == actual


@pytest.mark.parametrize(
    ("name", "size"), [("a.jpg", 0), ("0123456789abcdef" * 4 + ".json", 511), ("k_x-1.png", 8**11 - 1)]
)
def test_tar_header_matches_tarfile_ustar(name: str, size: int) -> None:
    from pass_wds.format.tar import tar_header

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
        size,
        MTIME,
        0o644,
        0,
        0,
        "",
        "",
    )
    assert tar_header(name, size) == info.tobuf(
        format=tarfile.USTAR_FORMAT, encoding="ascii", errors="strict"
    )


def test_tar_header_refuses_what_ustar_cannot_hold() -> None:
    from pass_wds.format.tar import tar_header

    with pytest.raises(ValueError):
        tar_header("x" * 101, 1)
    with pytest.raises(ValueError):
        tar_header("x", 8**11)


def test_header_sniff_agrees_with_pillow(image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --validate the format and size come from a header scan; it must say what Pillow says."""
    from pass_wds.imaging import sniff_header

    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", None
    )  # compare sizes of bombs too (the bomb rule is separate)
    checked = 0
    paths = sorted((image_root / "photos").iterdir()) + sorted((image_root / "hard-images").iterdir())
    for path in paths:
        data = path.read_bytes()
        got = sniff_header(data)
        if got is None:
            continue
        with Image.open(io.BytesIO(data)) as im:  # must not fail: a sniffed image is one Pillow can open
            expected = (im.format, *im.size)
        assert got == expected, path.name
        checked += 1
    photo_jpegs = list((image_root / "photos").glob("*.jpg"))
    assert photo_jpegs and all(sniff_header(p.read_bytes()) for p in photo_jpegs)  # the PASS case: every one
    assert checked > len(photo_jpegs)  # and plain JPEGs among the hard cases


def test_batched_writer_same_bytes_to_a_file_and_a_stream(tmp_path: Path) -> None:
    """writev batches (local files) and joined writes (object stores) give the same archive and sha256."""
    samples = [
        [(f"{i:05d}.jpg", bytes([i % 251]) * (i * 37 % 3000)), (f"{i:05d}.json", b"{}")] for i in range(700)
    ]
    stream = io.BytesIO()
    tw_stream = TarWriter(stream)
    with (tmp_path / "f.tar").open("wb") as f:
        tw_file = TarWriter(f)
        for members in samples:
            assert tw_file.add_sample(members) == tw_stream.add_sample(members)
        tw_file.close()
    tw_stream.close()
    data = (tmp_path / "f.tar").read_bytes()
    assert data == stream.getvalue() and len(data) == tw_file.offset
    assert tw_file.hexdigest() == tw_stream.hexdigest() == hashlib.sha256(data).hexdigest()
    with tarfile.open(tmp_path / "f.tar") as tf:
        assert [m.name for m in tf] == [name for members in samples for name, _ in members]
        assert tf.extractfile("00699.jpg").read() == samples[699][0][1]  # type: ignore[union-attr]


def test_reduced_jpeg_validation_agrees_with_a_full_decode(image_root: Path) -> None:
    """--validate decodes JPEGs at 1/8 scale; it must accept and reject exactly what a full decode does."""
    paths = sorted((image_root / "hard-images").iterdir()) + sorted((image_root / "photos").iterdir())[:20]
    cases = [(p.name, p.read_bytes()) for p in paths] + [("truncated", _jpeg(300, 200)[:-600])]
    jpegs = 0
    for name, data in cases:
        try:
            ours = inspect_image(data, validate=True, max_pixels=10**8)
            accepted = True
        except Rejected as r:
            if r.reason == reasons.BOMB:
                continue  # refused from the header, before any decode
            accepted = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = Image.open(io.BytesIO(data))
                im.load()  # full size, no draft
            full = True
        except Exception:
            full = False
        assert accepted == full, name
        if data[:2] == b"\xff\xd8":
            jpegs += 1
            assert not accepted or ours.format in ("JPEG", "MPO")
    assert jpegs >= 20
