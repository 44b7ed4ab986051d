"""Hostile archives: crafted tar headers must never hang, exhaust or crash the reader (issue 9, item 2).

Each archive here is built byte by byte: a valid member first, then one lying header. The promise is the same
for every one: the scan ends quickly, the member before the damage is kept, and the rest is one ``corrupt``
rejection, through the library and through the ``make-shards`` command.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from pass_wds.cli import make_shards_main
from pass_wds.convert.inputs import InputSpec, list_tar
from pass_wds.format import tar
from pass_wds.format.reasons import CORRUPT

pytestmark = pytest.mark.timeout(20)


def _good_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def _member(name: str, data: bytes, type_: bytes = tarfile.REGTYPE, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.type = type_
    pad = tar.padded(len(data)) - len(data)
    return info.tobuf(format=fmt) + data + bytes(pad)


def _patch(header: bytes, start: int, field: bytes) -> bytes:
    """``header`` with ``field`` written at ``start`` and the checksum recomputed (a well-formed lie)."""
    h = bytearray(header[: tar.BLOCK])
    h[start : start + len(field)] = field
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _raw_member(name: str, size_field: bytes, data: bytes = b"", type_: bytes = b"0") -> bytes:
    """A member header whose 12-byte size field is exactly ``size_field`` (may lie), then ``data``."""
    header = _patch(_member(name, b"")[: tar.BLOCK], 124, size_field)
    header = _patch(header, 156, type_)
    return header + data + bytes(tar.padded(len(data)) - len(data))


def _pax(records: bytes, type_: bytes = b"x") -> bytes:
    return _raw_member("././@PaxHeader", b"%011o\0" % len(records), records, type_)


def _record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    n = len(body) + len(str(n))
    return str(n).encode() + body


GOOD = _member("good1.jpg", _good_jpeg())
END = bytes(tar.END_OF_ARCHIVE)
TAIL = _member("after.jpg", _good_jpeg()) + END  # a member after the damage: must never be trusted

ATTACKS: dict[str, bytes] = {
    # the 9 KB archive of the issue: a negative size sends the offset back onto the same header forever
    "negative octal size": _raw_member("neg.jpg", b"-0000001000\0") + TAIL,
    "negative base-256 size": _raw_member("neg.jpg", b"\xff" * 11 + b"\x00") + TAIL,
    "huge base-256 size": _raw_member("big.jpg", b"\x80" + b"\x7f" + b"\xff" * 10) + TAIL,
    "non-octal size": _raw_member("x.jpg", b"0000000009\0\0") + TAIL,
    "size with sign": _raw_member("x.jpg", b"+0000001000\0") + TAIL,
    "size with underscore": _raw_member("x.jpg", b"00000_01000\0") + TAIL,
    "GNU long name bigger than 1 MiB": _raw_member("././@LongLink", b"%011o\0" % (64 << 20), b"", b"L")
    + TAIL,
    "GNU long name cut off": _raw_member("././@LongLink", b"%011o\0" % 5000, b"a" * 100, b"L"),
    "GNU long link negative": _raw_member("././@LongLink", b"-0000001000\0", b"", b"K") + TAIL,
    "pax size not a number": _pax(_record("size", "abc")) + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax size negative": _pax(_record("size", "-512")) + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax size huge": _pax(_record("size", "9" * 40)) + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax size lying short": _pax(_record("size", "0")) + _member("p.jpg", b"\xff" * 2000) + TAIL,
    "pax record length not a number": _pax(b"ab path=x\n") + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax record length past the end": _pax(b"900 path=x\n") + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax record length zero": _pax(b"0 path=x\n") + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax record without newline": _pax(b"11 path=xyz") + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax record without '='": _pax(b"9 pathxy\n") + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax header bigger than 1 MiB": _raw_member("pax", b"%011o\0" % (2 << 20), b"", b"x") + TAIL,
    "global pax size negative": _pax(_record("size", "-1024"), b"g") + _member("p.jpg", _good_jpeg()) + TAIL,
    "pax path with NUL": _pax(_record("path", "a\0b.jpg")) + _member("p.jpg", _good_jpeg()) + TAIL,
    "bad checksum field": _member("c.jpg", b"")[:148] + b"zzzzzz\0 " + _member("c.jpg", b"")[156:] + TAIL,
    "header cut off": _member("cut.jpg", _good_jpeg())[:300],
}


def _scan(data: bytes, total: bool) -> tuple[list[tar.TarEntry], str | None]:
    entries: list[tar.TarEntry] = []
    try:
        for e in tar.scan_tar(io.BytesIO(data), len(data) if total else None, chunk=4096):
            entries.append(e)
            assert len(entries) < 100, "the scan does not advance"
    except tar.TarDamaged as e:
        return entries, str(e)
    return entries, None


@pytest.mark.parametrize("total", [True, False], ids=["size-known", "stream"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_lying_header_is_damage_not_a_hang(name: str, total: bool) -> None:
    data = GOOD + ATTACKS[name]
    entries, damage = _scan(data, total)
    assert damage is not None, f"{name}: accepted as sound ({[e.name for e in entries]})"
    assert entries and entries[0].name == "good1.jpg"  # what came before the damage is kept
    assert all(e.name != "after.jpg" for e in entries)  # nothing after the damage is trusted
    assert all(e.size >= 0 and e.offset_data >= tar.BLOCK for e in entries)


def test_member_fields_are_bounded() -> None:
    """A pax path or GNU long name is bounded: 1 MiB is the most any header may claim."""
    assert tar.MAX_EXTENDED_HEADER == 1 << 20
    ok = _pax(_record("path", "d/" + "n" * 5000 + ".jpg")) + _member("p.jpg", _good_jpeg()) + END
    entries, damage = _scan(GOOD + ok, True)
    assert damage is None and entries[-1].name.endswith(".jpg") and len(entries[-1].name) == 5006


def test_valid_pax_and_gnu_still_read() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("é/" + "x" * 150 + ".jpg", "plain.jpg"):
            info = tarfile.TarInfo(name)
            data = _good_jpeg()
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    gnu = io.BytesIO()
    with tarfile.open(fileobj=gnu, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("g/" + "y" * 200 + ".jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    for data, n in ((buf.getvalue(), 2), (gnu.getvalue(), 1)):
        entries, damage = _scan(data, True)
        assert damage is None and len(entries) == n


def _convert(tmp_path: Path, archive: bytes, *extra: str) -> tuple[int, Path]:
    src = tmp_path / "in.tar"
    src.write_bytes(archive)
    out = tmp_path / "out"
    rc = make_shards_main([str(src), "-o", str(out), "--allow-missing-metadata", "--no-progress", *extra])
    return rc, out


@pytest.mark.parametrize(
    "name", ["negative octal size", "pax size not a number", "GNU long name bigger than 1 MiB"]
)
def test_make_shards_keeps_before_reports_rest(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _convert(tmp_path, GOOD + ATTACKS[name])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    index = json.loads((out / "index.json").read_text())
    assert index["totals"]["samples"] == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in errors] == [CORRUPT]


def test_damage_at_the_first_header_is_one_rejection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _convert(tmp_path, ATTACKS["negative octal size"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    [e] = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert e["reason"] == CORRUPT and e["detail"].startswith("not a readable tar archive")
    assert json.loads((out / "index.json").read_text())["totals"]["samples"] == 0


def test_listing_helper_accounts_for_every_member(tmp_path: Path) -> None:
    p = tmp_path / "a.tar"
    p.write_bytes(GOOD + ATTACKS["pax size negative"])
    listing = list_tar(InputSpec(str(p), "tar"), 0)
    assert [i.member for i in listing.items] == ["good1.jpg"]
    assert [r.reason for r in listing.rejections] == [CORRUPT]


@pytest.mark.parametrize("name", [b"/etc/\xff\xfe.jpeg", b"../\xff.jpeg", b"PASS_dataset/\xff\xfe.jpeg"])
def test_undecodable_member_names_are_reported_in_valid_utf8(tmp_path: Path, name: bytes) -> None:
    """Found by the fuzz test: a rejected member whose name is not UTF-8 (unsafe or not) crashed the run while
    errors.jsonl was written. It is a rejection shown with \\xNN escapes, and errors.jsonl stays UTF-8 JSON."""
    good = _member("PASS_dataset/ok.jpeg", _good_jpeg())
    bad = (
        _patch(_member("x", _good_jpeg())[: tar.BLOCK], 0, name.ljust(100, b"\0"))
        + _member("x", _good_jpeg())[tar.BLOCK :]
    )
    (tmp_path / "PASS.0.tar").write_bytes(good + bad + bytes(1024))
    out = tmp_path / "out"
    rc = make_shards_main(
        [str(tmp_path / "PASS.0.tar"), "--output", str(out), "--allow-missing-metadata", "--no-progress"]
    )
    assert rc == 0
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["reason"] for e in errors] == ["unsafe-path"]
    assert "\\xff" in errors[0]["member"]
    assert json.loads((out / "index.json").read_text(encoding="utf-8"))["totals"]["samples"] == 1
