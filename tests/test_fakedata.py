"""The test-data generator itself: PASS layout, determinism, expected.json consistency, bad classes, listing."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import pytest
from conftest import DATA
from PIL import Image

from pass_wds import fakedata as fd

REPO = Path(__file__).resolve().parent.parent
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory: pytest.TempPathFactory) -> fd.FakePassResult:
    out = tmp_path_factory.mktemp("fake-bad")
    return fd.make_fake_pass(
        fd.FakePassConfig(out=str(out), n_images=30, parts=3, seed=7, bad=True, workers=1)
    )


def _members(tar: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar) as tf:
        return tf.getmembers()


def _read(tar: Path, name: str) -> list[bytes]:
    with tarfile.open(tar) as tf:
        return [tf.extractfile(m).read() for m in tf.getmembers() if m.name == name and m.isreg()]  # type: ignore[union-attr]


def test_clean_layout_and_metadata(tmp_path: Path) -> None:
    res = fd.make_fake_pass(fd.FakePassConfig(out=str(tmp_path), n_images=25, parts=3, seed=1, workers=2))
    assert [t.name for t in res.tars] == ["PASS.0.tar", "PASS.1.tar", "PASS.2.tar"]
    names = [m.name for t in res.tars for m in _members(t)]
    assert len(names) == 25
    for n in names:
        d, base = n.rsplit("/", 1)
        assert d == "PASS_dataset/dummy_folder" and base.endswith(".jpeg") and HEX32.fullmatch(base[:-5])
    with open(res.metadata, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert tuple(header) == fd.COLUMNS
    assert sorted(r[0] for r in rows) == sorted(n.rsplit("/", 1)[1][:-5] for n in names)
    assert res.expected["rejected"] == [] and res.expected["metadata_without_image"] == []
    # every image decodes, sizes are PASS-like
    for t in res.tars:
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                im = Image.open(io.BytesIO(tf.extractfile(m).read()))  # type: ignore[union-attr]
                im.load()
                assert im.format == "JPEG" and max(im.size) <= 500 and min(im.size) >= 48


def test_metadata_has_hard_text_and_nulls(tmp_path: Path) -> None:
    res = fd.make_fake_pass(fd.FakePassConfig(out=str(tmp_path), n_images=80, parts=1, seed=3))
    rows = fd.read_metadata(res.metadata)
    names = {r["unickname"] for r in rows.values()}
    assert set(fd.HARD_NAMES) <= names
    assert any("," in n for n in names) and any('"' in n for n in names) and any("\n" in n for n in names)
    assert any(any(ord(c) > 0xFFFF for c in n) for n in names), "no emoji"
    assert any(any(0x4E00 <= ord(c) <= 0x9FFF for c in n) for n in names), "no CJK"
    assert any(r["latitude"] == "" for r in rows.values()) and any(r["latitude"] != "" for r in rows.values())
    for r in rows.values():
        assert fd.expected_json_value("photoid", r["photoid"]) == int(r["photoid"])
        if r["latitude"]:
            assert -90 <= fd.expected_json_value("latitude", r["latitude"]) <= 90
        assert fd.expected_json_value("unickname", r["unickname"]) == r["unickname"]


def test_deterministic_across_workers(tmp_path: Path) -> None:
    a = fd.make_fake_pass(
        fd.FakePassConfig(out=str(tmp_path / "a"), n_images=40, parts=2, seed=5, bad=True, workers=1)
    )
    b = fd.make_fake_pass(
        fd.FakePassConfig(out=str(tmp_path / "b"), n_images=40, parts=2, seed=5, bad=True, workers=2)
    )
    c = fd.make_fake_pass(
        fd.FakePassConfig(out=str(tmp_path / "c"), n_images=40, parts=2, seed=6, bad=True, workers=1)
    )
    for name in ["PASS.0.tar", "PASS.1.tar", fd.METADATA_NAME, fd.EXPECTED_NAME]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name
    assert a.expected == b.expected != c.expected


def test_expected_json_matches_archives(bad_set: fd.FakePassResult) -> None:
    exp = bad_set.expected
    out = bad_set.metadata.parent
    assert {r["reason"] for r in exp["rejected"]} == set(fd.REASONS)
    rows = fd.read_metadata(bad_set.metadata)
    for key, e in exp["accepted"].items():
        datas = _read(out / e["archive"], e["member"])
        assert hashlib.sha256(datas[0]).hexdigest() == e["sha256"] and len(datas[0]) == e["size"]
        assert key in rows
        im = Image.open(io.BytesIO(datas[0]))
        im.load()
        assert (im.format, im.size, im.mode) == (e["format"], (e["width"], e["height"]), e["mode"])
    formats = {(e["format"], e["mode"], e["progressive"]) for e in exp["accepted"].values()}
    assert ("PNG", "RGB", False) in formats and ("JPEG", "CMYK", False) in formats
    assert ("JPEG", "L", False) in formats and ("JPEG", "RGB", True) in formats
    for orphan in exp["metadata_without_image"]:
        assert orphan in rows and orphan not in exp["accepted"]
    assert exp["counts"]["metadata_rows"] == len(rows)


def test_each_bad_class_is_really_bad(bad_set: fd.FakePassResult) -> None:
    out = bad_set.metadata.parent
    rows = fd.read_metadata(bad_set.metadata)
    accepted = bad_set.expected["accepted"]
    for r in bad_set.expected["rejected"]:
        infos = [m for m in _members(out / r["archive"]) if m.name == r["member"]]
        assert infos, r
        reason = r["reason"]
        if reason == "not-a-regular-file":
            assert not any(m.isreg() for m in infos)
            continue
        data = _read(out / r["archive"], r["member"])[-1]
        if reason == "unsafe-path":
            assert r["member"].startswith("/") or ".." in r["member"].split("/")
        elif reason == "empty":
            assert data == b""
        elif reason in ("corrupt", "not-an-image"):
            with pytest.raises((OSError, SyntaxError)):
                Image.open(io.BytesIO(data)).load()
        elif reason == "decompression-bomb":
            with pytest.raises(Image.DecompressionBombError):  # at Pillow's default limit
                Image.open(io.BytesIO(data))
            assert len(data) < 100_000
        elif reason == "missing-metadata":
            assert r["key"] not in rows
            Image.open(io.BytesIO(data)).load()
        elif reason == "duplicate-key":
            assert r["key"] in accepted and accepted[r["key"]]["archive"] == "PASS.0.tar"
            assert hashlib.sha256(data).hexdigest() == r["sha256"] != accepted[r["key"]]["sha256"]
        if reason != "missing-metadata":
            assert r["key"] in rows, f"{reason}: a row must exist so that only the planted defect applies"


def test_bomb_also_triggers_a_lower_custom_limit() -> None:
    data = fd.bomb_png()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises((Image.DecompressionBombError, Image.DecompressionBombWarning)):
            Image.open(io.BytesIO(data))


def test_listing_only(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    listing = fd.make_listing(tmp_path, 20_000, parts=4, seed=2)
    assert time.perf_counter() - t0 < 30
    assert len(listing) == 20_000 and len(set(listing.keys)) == 20_000
    back = fd.read_listing(tmp_path / fd.LISTING_NAME)
    assert back.keys == listing.keys and (back.offsets == listing.offsets).all()
    rows = fd.read_metadata(tmp_path / fd.METADATA_NAME)
    assert len(rows) == 20_000 and set(rows) == set(listing.keys)
    # offsets follow the tar layout: each member = 512-byte header + data padded to 512
    for src in sorted(set(listing.sources)):
        idx = [i for i, s in enumerate(listing.sources) if s == src]
        assert listing.offsets[idx[0]] == 512
        for a, b in zip(idx, idx[1:], strict=False):
            assert listing.offsets[b] == listing.offsets[a] + (listing.sizes[a] + 511) // 512 * 512 + 512


def test_from_real_photos(tmp_path: Path) -> None:
    res = fd.make_fake_pass(
        fd.FakePassConfig(out=str(tmp_path), n_images=6, parts=1, photos=str(DATA / "photos"))
    )
    for e in res.expected["accepted"].values():
        assert e["format"] == "JPEG" and max(e["width"], e["height"]) <= 500
    with tarfile.open(res.tars[0]) as tf:
        assert len(tf.getmembers()) == 6


def test_cli_help_and_run(tmp_path: Path) -> None:
    script = REPO / "scripts" / "make_fake_pass.py"
    h = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--listing-only" in h.stdout and "--bad" in h.stdout
    r = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--images", "5", "--parts", "1", "--bad"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "PASS.0.tar").is_file() and (tmp_path / fd.EXPECTED_NAME).is_file()
    bad = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "x"), "--images", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
