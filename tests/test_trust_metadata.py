"""Issue 9 item 3: metadata is read as a person meant it (BOM, duplicates, reserved names, NaN, bad files)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pass_wds.convert.metadata import Metadata, read_metadata
from pass_wds.errors import InputError

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
BOM = "\ufeff"


def _strict(text: str) -> dict:
    def refuse(c: str) -> None:
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=refuse)  # type: ignore[no-any-return]


def _row(md: Metadata, key: str) -> dict:
    return _strict("{" + md[key] + "}")


def jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


def raw_tar(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w") as tf:
        for i, name in enumerate(names):
            data = jpeg(i)
            info = tarfile.TarInfo(f"PASS_dataset/0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_shards(tmp_path: Path, metadata: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    raw = raw_tar(tmp_path / "raw.tar", names)
    return subprocess.run(
        [*PASS_WDS, "make-shards", str(raw), "--metadata", str(metadata), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errs = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errs) == 1, r.stderr
    for n in needles:
        assert n in errs[0], (n, errs[0])


# ------------------------------------------------------------------------------------------------ BOM


@pytest.mark.parametrize("name", ["m.csv", "m.tsv", "m.jsonl", "m.json"])
def test_a_byte_order_mark_is_stripped(tmp_path: Path, name: str) -> None:
    rows = [{"hash": "aa01", "unickname": "Jo"}, {"hash": "bb02", "unickname": "Al"}]
    if name.endswith("sv"):
        d = "\t" if name.endswith(".tsv") else ","
        text = "\n".join(d.join(r.values()) for r in [{"h": "hash", "u": "unickname"}, *rows]) + "\n"
    elif name.endswith(".jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = json.dumps(rows)
    p = tmp_path / name
    p.write_bytes((BOM + text).encode("utf-8"))
    md = read_metadata(str(p))
    assert md.columns == ["hash", "unickname"]
    assert _row(md, "aa01") == {"hash": "aa01", "unickname": "Jo"}


def test_bom_csv_end_to_end_keeps_the_credit(tmp_path: Path) -> None:
    meta = tmp_path / "m.csv"
    meta.write_bytes((BOM + "hash,unickname\naa01,Jo\nbb02,Al\n").encode("utf-8"))
    r = make_shards(tmp_path, meta, ["aa01.jpg", "bb02.jpg"])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    with tarfile.open(next(out.glob("*.tar"))) as tf:
        metas = [
            _strict(tf.extractfile(m).read().decode()) for m in tf.getmembers() if m.name.endswith(".json")
        ]
    assert sorted(m["unickname"] for m in metas) == ["Al", "Jo"]
    assert all(not any(k.startswith(BOM) for k in m) for m in metas)
    attribution = (out / "attribution.csv").read_text(encoding="utf-8")
    assert "Jo" in attribution and BOM not in attribution


# ----------------------------------------------------------------------------------------- duplicates


def test_duplicate_key_rows_exit_2_naming_the_key(tmp_path: Path) -> None:
    meta = tmp_path / "m.csv"
    meta.write_text("hash,v\naa01,1\nbb02,2\naa01,3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"m\.csv.*'aa01'.*row 3"):
        read_metadata(str(meta))
    one_line_error(make_shards(tmp_path, meta, ["aa01.jpg", "bb02.jpg"]), "m.csv", "aa01")


@pytest.mark.parametrize("name", ["m.jsonl", "m.parquet"])
def test_duplicate_key_rows_in_other_formats(tmp_path: Path, name: str) -> None:
    rows = [{"hash": "k", "v": 1}, {"hash": "k", "v": 2}]
    p = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), p)
    else:
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError, match=r"'k'"):
        read_metadata(str(p))


def test_duplicate_column_names_are_refused(tmp_path: Path) -> None:
    meta = tmp_path / "m.csv"
    meta.write_text("hash,creator,creator\naa01,Jo,Al\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"m\.csv.*column 'creator'.*twice"):
        read_metadata(str(meta))
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"hash": "aa01", "creator": "Jo", "creator": "Al"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"m\.jsonl.*line 1.*'creator'"):
        read_metadata(str(jl))
    one_line_error(make_shards(tmp_path, meta, ["aa01.jpg"]), "m.csv", "creator")


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl", "m.parquet"])
def test_a_column_named_like_pass_wds_fields_is_refused(tmp_path: Path, name: str) -> None:
    rows = [{"hash": "aa01", "_provenance": "mine"}]
    p = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), p)
    elif name.endswith(".jsonl"):
        p.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    else:
        p.write_text("hash,_provenance\naa01,mine\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"_provenance.*reserved"):
        read_metadata(str(p))


# ------------------------------------------------------------------------------------- NaN, infinity


def test_nan_and_infinity_become_null(tmp_path: Path) -> None:
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"hash": "a", "x": NaN, "y": Infinity, "z": [-Infinity, 1]}\n', encoding="utf-8")
    js = tmp_path / "m.json"
    js.write_text('[{"hash": "a", "x": NaN, "y": Infinity, "z": [-Infinity, 1]}]', encoding="utf-8")
    pqf = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"hash": ["a"], "x": [float("nan")], "y": [float("inf")], "z": [[float("-inf"), 1.0]]}), pqf
    )
    for p in (jl, js, pqf):
        row = _row(read_metadata(str(p)), "a")
        assert row["x"] is None and row["y"] is None and row["z"] == [None, 1], (p.name, row)
    csvf = tmp_path / "m.csv"
    csvf.write_text("hash,x\na,NaN\nb,1.5\n", encoding="utf-8")
    md = read_metadata(str(csvf))
    assert _row(md, "a")["x"] == "NaN" and _row(md, "b")["x"] == "1.5"  # text column: kept as text


def test_every_sample_json_parses_strictly(tmp_path: Path) -> None:
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"hash": "aa01", "score": NaN}\n{"hash": "bb02", "score": Infinity}\n', encoding="utf-8")
    r = make_shards(tmp_path, meta, ["aa01.jpg", "bb02.jpg"])
    assert r.returncode == 0, r.stderr
    with tarfile.open(next((tmp_path / "out").glob("*.tar"))) as tf:
        for m in tf.getmembers():
            if m.name.endswith(".json"):
                assert _strict(tf.extractfile(m).read().decode())["score"] is None


# --------------------------------------------------------------------------------------- bad files


def test_bad_encoding_names_the_file_and_line(tmp_path: Path) -> None:
    meta = tmp_path / "latin.csv"
    meta.write_bytes(b"hash,unickname\naa01,Jo\nbb02,Fran\xe7ois\n")
    with pytest.raises(InputError, match=r"latin\.csv.*line 3.*UTF-8"):
        read_metadata(str(meta))
    one_line_error(make_shards(tmp_path, meta, ["aa01.jpg"]), "latin.csv", "line 3")
    jl = tmp_path / "latin.jsonl"
    jl.write_bytes(b'{"hash": "aa01"}\n{"hash": "Fran\xe7ois"}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl.*line 2"):
        read_metadata(str(jl))


def test_bad_encoding_in_the_header(tmp_path: Path) -> None:
    meta = tmp_path / "h.csv"
    meta.write_bytes(b"hash,cr\xe9ateur\naa01,Jo\n")
    with pytest.raises(InputError, match=r"h\.csv.*line 1.*UTF-8"):
        read_metadata(str(meta))


def test_an_oversized_csv_field_names_the_file_and_line(tmp_path: Path) -> None:
    meta = tmp_path / "big.csv"
    with meta.open("w", encoding="utf-8") as f:
        f.write("hash,note\naa01,short\nbb02,short\n")
        f.write('cc03,"' + "x" * (20 << 20) + '"\n')
    with pytest.raises(InputError, match=r"big\.csv.*line 4.*field"):
        read_metadata(str(meta))


def test_an_oversized_header_is_one_line(tmp_path: Path) -> None:
    meta = tmp_path / "wide.csv"
    meta.write_text("hash," + "y" * (2 << 20) + "\naa01,1\n", encoding="utf-8")
    one_line_error(make_shards(tmp_path, meta, ["aa01.jpg"]), "wide.csv", "line 1")


def test_malformed_json_names_the_file_and_line(tmp_path: Path) -> None:
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"hash": "a"}\n{"hash": "b",\n', encoding="utf-8")
    js = tmp_path / "m.json"
    js.write_text('[{"hash": "a"},\n {"hash": }]', encoding="utf-8")
    for p, line in ((jl, 2), (js, 2)):
        with pytest.raises(InputError, match=rf"{p.name}.*line {line}"):
            read_metadata(str(p))
    one_line_error(make_shards(tmp_path, js, ["a.jpg"]), "m.json", "line 2")
