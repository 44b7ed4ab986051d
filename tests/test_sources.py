"""Inputs and metadata: listing raw tars in place, and loading the allowlist with exact fidelity."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pass_wds.convert.inputs import expand_inputs, list_tar, merge_listings
from pass_wds.convert.metadata import Metadata, read_metadata
from pass_wds.errors import InputError
from pass_wds.format import keys, tar
from pass_wds.format import reasons as reason

ROWS = [
    {
        "hash": "aa01",
        "unickname": 'Jo, "the" photographer',
        "latitude": "51.5",
        "longitude": "-0.12",
        "photoid": "0012",
        "note": "line1\nline2 é 漢字 🙂",
    },
    {"hash": "bb02", "unickname": "", "latitude": "", "longitude": "1e-3", "photoid": "7", "note": "plain"},
]


def _row(md: Metadata, key: str) -> dict:
    return json.loads("{" + md[key] + "}")


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_csv_fidelity(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    _write_csv(p, ROWS)
    md = read_metadata(str(p))
    assert md.columns == list(ROWS[0])
    a, b = _row(md, "aa01"), _row(md, "bb02")
    assert list(a) == list(ROWS[0])  # column order kept
    assert a["unickname"] == 'Jo, "the" photographer'
    assert a["note"] == "line1\nline2 é 漢字 🙂"
    assert a["latitude"] == 51.5 and b["longitude"] == 0.001  # numeric columns stay numbers
    assert a["photoid"] == "0012" and b["photoid"] == "7"  # a leading zero keeps the column text
    assert b["unickname"] is None and b["latitude"] is None  # empty cells become null
    assert "1e-3" in md["bb02"]  # numbers are written verbatim, no float round trip


def test_jsonl_json_and_parquet_agree(tmp_path: Path) -> None:
    rows = [{"hash": "k1", "n": 3, "t": "a,b", "x": None}, {"hash": "k2", "n": 4.5, "t": "é", "x": True}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "m.json").write_text(json.dumps(rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    for name in ("m.jsonl", "m.json", "m.parquet"):
        md = read_metadata(str(tmp_path / name))
        assert _row(md, "k1")["t"] == "a,b" and _row(md, "k2")["t"] == "é", name
        assert _row(md, "k1")["x"] is None, name
        assert _row(md, "k2")["n"] == 4.5, name


def test_missing_key_column_names_the_columns(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    _write_csv(p, ROWS)
    with pytest.raises(InputError, match=r"key column 'id' not found .*columns: hash, unickname"):
        read_metadata(str(p), key_column="id")


def test_unreadable_metadata(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="metadata not found"):
        read_metadata(str(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        read_metadata(str(bad))


def test_duplicate_metadata_rows_are_refused(tmp_path: Path) -> None:
    """Which of two rows a person meant cannot be guessed (issue 9): the key and row are named instead."""
    p = tmp_path / "m.csv"
    _write_csv(p, [{"hash": "a", "v": "1"}, {"hash": "a", "v": "2"}])
    with pytest.raises(InputError, match=r"key 'a' appears again in row 2"):
        read_metadata(str(p))


def _tar_with_everything(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:

        def add(name: str, data: bytes = b"x", type_: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type = type_
            info.size = len(data) if type_ == tarfile.REGTYPE else 0
            info.linkname = link
            tf.addfile(info, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)

        add("PASS_dataset/dummy_folder", type_=tarfile.DIRTYPE)
        add("PASS_dataset/dummy_folder/good.jpeg", b"0123456789")
        add("PASS_dataset/dummy_folder/link.jpeg", type_=tarfile.SYMTYPE, link="good.jpeg")
        add("/etc/abs.jpeg")
        add("PASS_dataset/../../evil.jpeg")
        add("PASS_dataset/dummy_folder/fifo.jpeg", type_=tarfile.FIFOTYPE)


def test_tar_listing_offsets_and_refusals(tmp_path: Path) -> None:
    p = tmp_path / "PASS.0.tar"
    _tar_with_everything(p)
    [spec] = expand_inputs([str(p)])
    listing = list_tar(spec, 0)
    assert [i.key for i in listing.items] == ["good"]
    item = listing.items[0]
    assert p.read_bytes()[item.offset : item.offset + item.size] == b"0123456789"
    reasons = {r.member: r.reason for r in listing.rejections}
    assert reasons == {
        "PASS_dataset/dummy_folder": reason.NOT_REGULAR,
        "PASS_dataset/dummy_folder/link.jpeg": reason.NOT_REGULAR,
        "/etc/abs.jpeg": reason.UNSAFE_PATH,
        "PASS_dataset/../../evil.jpeg": reason.UNSAFE_PATH,
        "PASS_dataset/dummy_folder/fifo.jpeg": reason.NOT_REGULAR,
    }


def test_expand_braces_globs_and_missing(tmp_path: Path) -> None:
    for i in range(3):
        _tar_with_everything(tmp_path / f"PASS.{i}.tar")
    (tmp_path / "imgs").mkdir()
    specs = expand_inputs(
        [str(tmp_path / "PASS.{0..1}.tar"), str(tmp_path / "PASS.2*"), str(tmp_path / "imgs")]
    )
    assert [s.name for s in specs] == ["PASS.0.tar", "PASS.1.tar", "PASS.2.tar", "imgs"]
    assert [s.kind for s in specs] == ["tar", "tar", "tar", "dir"]
    with pytest.raises(InputError, match="input not found"):
        expand_inputs([str(tmp_path / "PASS.{0..5}.tar")])
    with pytest.raises(InputError, match="matches nothing"):
        expand_inputs([str(tmp_path / "*.zip")])


def test_duplicates_across_archives_first_kept(tmp_path: Path) -> None:
    for i in range(2):
        _tar_with_everything(tmp_path / f"PASS.{i}.tar")
    specs = expand_inputs([str(tmp_path / "PASS.{0..1}.tar")])
    merged = merge_listings(specs, [list_tar(s, i) for i, s in enumerate(specs)])
    assert [(i.key, i.input_index) for i in merged.items] == [("good", 0)]
    dup = [r for r in merged.rejections if r.reason == reason.DUPLICATE_KEY]
    assert len(dup) == 1 and dup[0].source == "PASS.1.tar" and "PASS.0.tar" in dup[0].detail


def test_key_of() -> None:
    assert keys.key_of("PASS_dataset/dummy_folder/abc123.jpeg") == "abc123"
    assert keys.key_of("x/pillow__16bit.cropped.tif") == "pillow__16bit.cropped"
    assert keys.key_of("noext") == "noext"


# ------------------------------------------------------------------------------------ tar scanning


def _scan(path: Path, chunk: int = 8 << 20) -> list[tuple[str, int, int, bool]]:
    with path.open("rb") as f:
        return [(e.name, e.offset_data, e.size, e.isreg) for e in tar.scan_tar(f, path.stat().st_size, chunk)]


def _tarfile_view(path: Path) -> list[tuple[str, int, int, bool]]:
    with tarfile.open(path) as tf:
        return [(m.name, m.offset_data, m.size, m.isreg()) for m in tf]


def test_scan_agrees_with_tarfile_on_foreign_shards(corpus: Path) -> None:
    tars = sorted((corpus / "foreign-shards").glob("*.tar"))
    assert len(tars) >= 10
    for p in tars:
        assert _scan(p) == _tarfile_view(p), p.name
        assert _scan(p, chunk=1024) == _tarfile_view(p), p.name  # headers straddling read blocks


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_scan_agrees_with_tarfile_on_long_and_unicode_names(tmp_path: Path, fmt: int) -> None:
    p = tmp_path / "x.tar"
    names = ["a/" + "x" * 90 + "/" + "y" * 60 + ".jpeg", "short.jpeg", "big.bin"]
    if fmt != tarfile.USTAR_FORMAT:
        names += ["ünï/cödé 🙂.jpeg", "z" * 300 + ".jpeg"]
    with tarfile.open(p, "w", format=fmt) as tf:
        for i, name in enumerate(names):
            data = bytes([i]) * (i * 1000 + 7)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("folder/")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        old_dir = tarfile.TarInfo("v7folder/")  # old tars: a regular-file type with a trailing slash
        old_dir.type = tarfile.AREGTYPE
        tf.addfile(old_dir)
    assert _scan(p) == _tarfile_view(p)
    assert ("v7folder", 0, False) in [(n, s, r) for n, _, s, r in _scan(p)]
    assert _scan(p, chunk=512) == _tarfile_view(p)
    with p.open("rb") as f:
        for e in tar.scan_tar(f, p.stat().st_size):
            if e.isreg:
                f.seek(e.offset_data)
                i = names.index(e.name)
                assert f.read(e.size) == bytes([i]) * (i * 1000 + 7)


def _three_member_tar(path: Path) -> bytes:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name in ("a.jpeg", "b.jpeg", "c.jpeg"):
            info = tarfile.TarInfo(name)
            info.size = 2000
            tf.addfile(info, io.BytesIO(b"x" * 2000))
    return path.read_bytes()


def test_truncated_archive_keeps_what_precedes_the_cut(tmp_path: Path) -> None:
    p = tmp_path / "PASS.0.tar"
    data = _three_member_tar(p)
    p.write_bytes(data[: 512 + 2048 + 512 + 1000])  # cut inside b's data
    [spec] = expand_inputs([str(p)])
    listing = list_tar(spec, 0)
    assert [i.key for i in listing.items] == ["a"]  # b is cut off: never listed with bytes it does not have
    [damage] = listing.rejections
    assert damage.reason == reason.CORRUPT and "b.jpeg" in damage.detail and "cut off" in damage.detail


def test_bad_checksum_midway_is_reported_not_silent(tmp_path: Path) -> None:
    p = tmp_path / "PASS.0.tar"
    data = bytearray(_three_member_tar(p))
    data[2560 + 10] ^= 0xFF  # b's header name: its checksum no longer matches (tarfile would just stop here)
    p.write_bytes(bytes(data))
    [spec] = expand_inputs([str(p)])
    listing = list_tar(spec, 0)
    assert [i.key for i in listing.items] == ["a"]
    assert [r.reason for r in listing.rejections] == [reason.CORRUPT]
    assert "checksum" in listing.rejections[0].detail


def test_not_a_tar_is_one_rejection(tmp_path: Path) -> None:
    """One unreadable archive of ten is reported, not the end of a run the other nine can finish."""
    for name, data in [("empty.tar", b""), ("text.tar", b"hello world\n" * 100)]:
        p = tmp_path / name
        p.write_bytes(data)
        [spec] = expand_inputs([str(p)])
        listing = list_tar(spec, 0)
        assert not listing.items
        [r] = listing.rejections
        assert (r.source, r.reason) == (name, reason.CORRUPT)
        assert r.detail.startswith("not a readable tar archive")


def test_sparse_members_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "PASS.0.tar"
    with tarfile.open(p, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("s.jpeg")
        info.size = 10
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tf.addfile(info, io.BytesIO(b"0123456789"))
    [spec] = expand_inputs([str(p)])
    listing = list_tar(spec, 0)
    assert not listing.items
    assert [(r.reason, r.detail.split(" ")[0]) for r in listing.rejections] == [
        (reason.NOT_REGULAR, "sparse")
    ]


def test_csv_strings_are_escaped_as_json_dumps_does(tmp_path: Path) -> None:
    """The Arrow fast path (quote only) and the escaping fallback together equal json.dumps, cell by cell."""
    tricky = [
        'a"b',
        "back\\slash",
        "new\nline",
        "tab\there",
        "\x01ctl",
        "\x7fdel",
        "ünï ☃ 🙂",
        "NA",
        "null",
        "007",
    ]
    rows = [{"hash": f"k{i}", "t": tricky[i % len(tricky)], "u": "plain"} for i in range(3 * len(tricky))]
    p = tmp_path / "m.csv"
    _write_csv(p, rows)
    md = read_metadata(str(p))
    for r in rows:
        expected = json.dumps(r, ensure_ascii=False, separators=(",", ":"))[1:-1]
        assert md[r["hash"]] == expected


def test_non_utf8_member_name_is_refused_not_fatal(tmp_path: Path) -> None:
    """A member name that is not UTF-8 cannot be a key in UTF-8 JSON or the Arrow listing: it is refused as
    unsafe-path (planning used to stop on it with a UnicodeEncodeError); the other members are listed."""
    p = tmp_path / "PASS.0.tar"
    with tarfile.open(p, "w", format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        for name in ("ok.jpeg", "bad\udcff.jpeg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    [spec] = expand_inputs([str(p)])
    listing = list_tar(spec, 0)
    assert [i.key for i in listing.items] == ["ok"]
    assert [(r.reason, r.detail) for r in listing.rejections] == [
        (reason.UNSAFE_PATH, "name is not valid UTF-8")
    ]
