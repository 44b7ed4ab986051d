"""Issue 9 item 4: keys and formats are consistent end to end (a cleaned key never equals a real one; make-shards
writes exactly the formats the loader reads, one list for both)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from pass_wds import imaging
from pass_wds.format import reasons  # noqa: F401
from pass_wds.format.keys import safe_key
from pass_wds.format.samples import EXTENSIONS, IMAGE_EXTS

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


def image(fmt: str, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 90, 160)).save(buf, fmt)
    return buf.getvalue()


def raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PASS_WDS, *map(str, args)], capture_output=True, text=True, timeout=120)


def members(out: Path) -> list[str]:
    names: list[str] = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tf:
            names += tf.getnames()
    return names


# ------------------------------------------------------------------------------------------------- keys


def test_a_cleaned_key_never_equals_a_real_key() -> None:
    cleaned = safe_key("a b")
    assert safe_key(cleaned) != cleaned  # a real file named like a cleaned key is cleaned too
    lookalike = "a_b_" + hashlib.sha1(b"a b").hexdigest()[:12]  # what a cleaned key looked like before
    assert safe_key(lookalike) != safe_key("a b")
    for key in ("ab12cd", "PASS-hash_01", "x" * 64, "0123456789abcdef0123456789abcdef"):
        assert safe_key(key) == key  # PASS hashes and ordinary safe keys stay as they are
    keys = ["a b", "a_b", lookalike, "é", "k_" + "0" * 12, "x" * 65, "x" * 64 + "y"]
    assert len({safe_key(k) for k in keys}) == len(keys)


def test_cleaned_and_real_lookalike_keys_both_survive_end_to_end(tmp_path: Path) -> None:
    """Before: 'a b.jpeg' and a file named like its cleaned form collided, and verify failed on a fresh output."""
    lookalike = "a_b_" + hashlib.sha1(b"a b").hexdigest()[:12]
    raw = raw_tar(
        tmp_path / "raw.tar", [("d/a b.jpeg", image("JPEG", 1)), (f"d/{lookalike}.jpeg", image("JPEG", 2))]
    )
    meta = tmp_path / "m.csv"
    meta.write_text(f"hash,creator\na b,Jo\n{lookalike},Al\n", encoding="utf-8")
    out = tmp_path / "out"
    r = cli("make-shards", raw, "--metadata", meta, "--output", out)
    assert r.returncode == 0, r.stderr
    names = members(out)
    assert len(names) == 4 and len(set(names)) == 4, names
    r = cli("verify", out)
    assert r.returncode == 0, r.stdout + r.stderr
    with tarfile.open(next(out.glob("*.tar"))) as tf:
        creators = {
            json.loads(tf.extractfile(m).read())["_provenance"]["key"]: json.loads(tf.extractfile(m).read())[
                "creator"
            ]  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.name.endswith(".json")
        }
    assert creators == {"a b": "Jo", lookalike: "Al"}


# ---------------------------------------------------------------------------------------------- formats


def test_one_list_of_formats_for_both_halves() -> None:
    assert set(EXTENSIONS.values()) <= IMAGE_EXTS  # everything written is read
    assert "ico" not in EXTENSIONS.values()


@pytest.mark.parametrize("fmt", ["TGA", "ICO", "PCX", "SGI"])
def test_formats_the_loader_does_not_read_are_rejected(fmt: str) -> None:
    data = image(fmt)
    with pytest.raises(imaging.Rejected) as e:
        imaging.inspect_image(data, validate=True, max_pixels=10**8)
    assert e.value.reason == reasons.UNSUPPORTED_FORMAT and fmt in e.value.detail
    with pytest.raises(imaging.Rejected):
        imaging.inspect_image(data, validate=False, max_pixels=10**8)


def test_unsupported_formats_end_to_end(tmp_path: Path) -> None:
    src = [
        ("d/aa.tga", image("TGA")),
        ("d/bb.ico", image("ICO")),
        ("d/cc.png", image("PNG")),
        ("d/dd.pcx", image("PCX")),
    ]
    raw = raw_tar(tmp_path / "raw.tar", src)
    out = tmp_path / "out"
    r = cli("make-shards", raw, "--allow-missing-metadata", "--output", out)
    assert r.returncode == 0, r.stderr
    assert sorted(members(out)) == ["cc.json", "cc.png"]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted((e["key"], e["reason"]) for e in errors) == [
        ("aa", "unsupported-format"),
        ("bb", "unsupported-format"),
        ("dd", "unsupported-format"),
    ]
    # Re-encoding makes them JPEG, which the loader reads: then they are kept.
    out2 = tmp_path / "out2"
    r = cli("make-shards", raw, "--allow-missing-metadata", "--output", out2, "--quality", "90")
    assert r.returncode == 0, r.stderr
    assert len(members(out2)) == 8 and all(n.endswith((".jpg", ".json")) for n in members(out2))
