"""``make-shards update`` (issue 18): a new revision of an output, rewriting only the shards that hold removed
samples, from the shards themselves; crash-safe, resumable, local and S3 alike.

One PASS-shaped conversion (with bad inputs, so errors.jsonl and metadata_without_image.txt are not empty) is
made once per module; each test updates a copy of it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOutputs

from pass_wds import fakedata as fd
from pass_wds.cli import main as pass_wds_main
from pass_wds.cli import make_shards_main
from pass_wds.convert.rewrite import CRASH_POINTS
from pass_wds.format import revisions
from pass_wds.format.idx import parse_idx
from pass_wds.verify import verify

SHARD = "400KB"
DATE = "1650000000"  # SOURCE_DATE_EPOCH of every update here: 2022-04-15T05:20:00Z
MAKE_SHARDS = [
    sys.executable,
    "-c",
    "import sys; from pass_wds.cli import make_shards_main; sys.exit(make_shards_main())",
]


@pytest.fixture(scope="module")
def converted(fake_outputs: FakeOutputs) -> tuple[fd.FakePassResult, Path]:
    raw = fake_outputs.raw(n_images=90, bad=True)
    return raw, fake_outputs.output(raw, SHARD)


@pytest.fixture(scope="module")
def raw(converted: tuple[fd.FakePassResult, Path]) -> fd.FakePassResult:
    return converted[0]


@pytest.fixture(scope="module")
def base(converted: tuple[fd.FakePassResult, Path]) -> Path:
    return converted[1]


@pytest.fixture(autouse=True)
def _fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", DATE)


@pytest.fixture
def out(base: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(base, dest)  # copy2: the copies keep the base's modification times
    return dest


# ------------------------------------------------------------------------------------------------ helpers


def index(out: Path) -> dict[str, Any]:
    return json.loads((out / "index.json").read_text())


def sample_keys(out: Path) -> list[str]:
    """Every sample key, in shard order then tar order, from the .idx files."""
    keys = []
    for e in index(out)["shardlist"]:
        keys += parse_idx((out / e["idx"]).read_text()).keys
    return keys


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """name → (sha256, mtime_ns, inode) of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
            p.stat().st_ino,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tar_samples(data: bytes) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """(key, [(member name, bytes)]) per sample, in tar order."""
    out: list[tuple[str, list[tuple[str, bytes]]]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            key = m.name.split(".", 1)[0]
            body = tf.extractfile(m).read()  # type: ignore[union-attr]
            if out and out[-1][0] == key:
                out[-1][1].append((m.name, body))
            else:
                out.append((key, [(m.name, body)]))
    return out


def update(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = make_shards_main(["update", *args])
    except SystemExit as e:  # argparse's own usage errors
        rc = int(e.code or 0)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def keys_file(tmp_path: Path, keys: list[str], name: str = "takedown.txt") -> Path:
    p = tmp_path / name
    p.write_text("".join(k + "\n" for k in keys))
    return p


def spread_keys(out: Path, n: int) -> list[str]:
    """``n`` keys spread over the shards (every k-th key)."""
    keys = sample_keys(out)
    step = max(1, len(keys) // n)
    return keys[::step][:n]


def check_revision(before: dict[str, Any], out: Path, removed: set[str]) -> dict[str, Any]:
    """What every update must give: the kept samples exactly; untouched shards unmodified (bytes, mtime,
    inode); each rewritten shard the old one minus the removed samples, same order, same member bytes;
    verify passes; no _state, no temp file, no superseded shard left."""
    old_index = json.loads(before["index.json"][3])
    new_index = index(out)
    assert new_index["revision"] == old_index.get("revision", 0) + 1
    old_by_pos = old_index["shardlist"]
    new_names = {e["url"] for e in new_index["shardlist"]}
    entry = new_index["history"][-1]
    replaced = {r["position"]: r for r in entry["replaced"]}
    after = snapshot(out)
    new_iter = iter(new_index["shardlist"])
    for pos, old in enumerate(old_by_pos):
        rep = replaced.get(pos)
        if rep is None:
            new = next(new_iter)
            assert new == old
            for name in (old["url"], old["idx"]):
                assert after[name] == before[name][:3], f"{name} was touched"
            continue
        old_samples = tar_samples(before[old["url"]][4])
        kept = [s for s in old_samples if s[0] not in removed]
        assert [s[0] for s in old_samples if s[0] in removed] == [
            old_samples[i][0] for i, _ in rep["removed"]
        ]
        if rep["new"] is None:
            assert not kept
            continue
        new = next(new_iter)
        assert new["url"] == rep["new"] and (out / new["url"]).exists()
        assert tar_samples((out / new["url"]).read_bytes()) == kept
        assert new["nsamples"] == len(kept)
        assert (
            old["url"] not in new_names
            and not (out / old["url"]).exists()
            and not (out / old["idx"]).exists()
        )
    assert not (out / "_state").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert all(c.ok for c in verify(str(out))), [c.problems for c in verify(str(out)) if not c.ok]
    assert not removed & set(sample_keys(out))
    return new_index


def state_of(folder: Path) -> dict[str, Any]:
    return {k: (v[0], v[1], v[2], v[3] if len(v) > 3 else None) for k, v in snapshot(folder).items()}


def before_of(out: Path) -> dict[str, Any]:
    """snapshot plus the bytes, for check_revision."""
    snap = snapshot(out)
    return {
        k: (*v, (out / k).read_text() if k == "index.json" else None, (out / k).read_bytes())
        for k, v in snap.items()
    }


# --------------------------------------------------------------------------------------------- removals


@pytest.mark.parametrize("n", [1, 10])
def test_remove_keys_rewrites_only_the_shards_that_hold_them(
    out: Path, tmp_path: Path, n: int, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = spread_keys(out, n)
    before = before_of(out)
    rc, stdout, err = update(str(out), "--remove", str(keys_file(tmp_path, gone)), capsys=capsys)
    assert rc == 0, err
    new = check_revision(before, out, set(gone))
    entry = new["history"][0]
    assert entry["removed"]["count"] == n and "keys" not in entry["removed"]
    assert entry["removed"]["sha256"] == revisions.keys_digest(gone)
    assert entry["previous_index_sha256"] == hashlib.sha256(before["index.json"][4]).hexdigest()
    assert entry["date"] == "2022-04-15T05:20:00Z" and entry["source"]["kind"] == "keys-file"
    assert len(entry["replaced"]) == len({revisions_position(before, k) for k in gone})
    assert all(r["new"] == revisions.shard_name("pass", r["position"], 1) for r in entry["replaced"])
    assert (
        new["totals"]["samples"]
        == len(sample_keys(out))
        == int(json.loads(before["index.json"][3])["totals"]["samples"]) - n
    )
    assert f"removed {n} samples" in stdout
    for key in gone:  # a takedown leaves no trace of the key in any file of the output
        for name, data in contents(out).items():
            assert key.encode() not in data, (key, name)


def revisions_position(before: dict[str, Any], key: str) -> int:
    for pos, e in enumerate(json.loads(before["index.json"][3])["shardlist"]):
        if key in parse_idx(before[e["idx"]][4].decode()).keys:
            return pos
    raise AssertionError(key)


def test_many_keys_including_a_whole_shard(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = index(out)["shardlist"][0]
    whole = parse_idx((out / first["idx"]).read_text()).keys
    keys = sample_keys(out)
    gone = sorted(set(whole) | set(keys[::3]))
    assert len(gone) * 2 < len(keys)
    before = before_of(out)
    rc, _, err = update(str(out), "--remove", str(keys_file(tmp_path, gone)), "--record-keys", capsys=capsys)
    assert rc == 0, err
    new = check_revision(before, out, set(gone))
    assert new["shardlist"][0]["url"] != first["url"]  # the emptied shard left the list
    assert new["history"][0]["replaced"][0]["new"] is None
    assert new["history"][0]["removed"]["keys"] == gone
    assert new["totals"]["shards"] == len(json.loads(before["index.json"][3])["shardlist"]) - 1


def test_allowlist_update_brings_every_side_file_up_to_date(
    out: Path, raw: fd.FakePassResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = fd.read_metadata(raw.metadata)
    keys = sample_keys(out)
    gone = keys[1::9][:10]
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    corrupt = next(
        e["key"] for e in errors if e["reason"] == "corrupt"
    )  # rejected, and now off the allowlist
    extra = ["f" * 32, "e" * 32]  # allowlisted keys with no image
    new_rows = [r for k, r in rows.items() if k not in gone and k != corrupt]
    new_rows += [{**next(iter(rows.values())), "hash": k} for k in extra]
    allow = tmp_path / "v3.csv"
    fd.write_metadata(allow, new_rows)
    before = before_of(out)
    rc, stdout, err = update(str(out), "--metadata", str(allow), "--dataset-version", "v3", capsys=capsys)
    assert rc == 0, err
    new = check_revision(before, out, set(gone))
    assert new["dataset_version"] == "v3" and new["history"][0]["dataset_version"] == "v3"
    assert new["history"][0]["source"] == {
        "kind": "allowlist",
        "sha256": hashlib.sha256(allow.read_bytes()).hexdigest(),
        "key_column": "hash",
    }
    # attribution.csv: the removed creators are gone, the others unchanged and in order
    old_attr = list(csv.reader(io.StringIO(before["attribution.csv"][4].decode())))
    new_attr = list(csv.reader(io.StringIO((out / "attribution.csv").read_text())))
    assert new_attr == [r for r in old_attr if r[0] not in gone]
    # errors.jsonl: the record of an input the allowlist no longer names is gone; missing-metadata ones stay
    new_errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert new_errors == [e for e in errors if e["key"] != corrupt]
    # metadata_without_image.txt: what the new allowlist names that has no sample
    unmatched = (out / "metadata_without_image.txt").read_text().split()
    assert set(extra) <= set(unmatched) and not set(gone) & set(unmatched)
    assert "2 allowlist keys have no sample" not in stdout or len(unmatched) == 2
    assert (
        f"{len(unmatched)} allowlist keys have no sample" in stdout
        and "make-shards with the original inputs" in stdout
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples_written"] == new["totals"]["samples"] and stats["shards"] == new["totals"]["shards"]
    assert stats["metadata_rows"] == len(new_rows) and stats["metadata_without_image"] == len(unmatched)
    assert stats["rejected_total"] == len(new_errors) and stats["revision"] == 1
    assert stats["removed_by_revisions"] == len(gone)
    assert stats["bytes"]["output"] == new["totals"]["bytes"]
    doc = json.loads((out / "croissant.json").read_text())
    files = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    assert [(f["contentUrl"], f["sha256"]) for f in files] == [
        (e["url"], e["sha256"]) for e in new["shardlist"]
    ]
    for fs in (d for d in doc["distribution"] if d["@type"] == "cr:FileSet"):
        assert fs["containedIn"] == [{"@id": e["url"]} for e in new["shardlist"]]
    old_doc = json.loads(before["croissant.json"][4])
    assert doc["recordSet"] == old_doc["recordSet"]


def test_inspect_shows_revision_and_history(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    update(
        str(out),
        "--remove",
        str(keys_file(tmp_path, spread_keys(out, 3))),
        "--dataset-version",
        "v2",
        capsys=capsys,
    )
    assert pass_wds_main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "revision     1 (dataset version v2)" in text
    assert "r1 2022-04-15T05:20:00Z: removed 3 samples" in text


def test_a_second_revision_chains_to_the_first(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = spread_keys(out, 4)
    assert update(str(out), "--remove", str(keys_file(tmp_path, first)), capsys=capsys)[0] == 0
    r1 = (out / "index.json").read_bytes()
    # the second removal hits a shard rewritten by the first: its r1 name becomes r2
    rewritten = next(e for e in index(out)["shardlist"] if "-r1." in e["url"])
    second = parse_idx((out / rewritten["idx"]).read_text()).keys[:1]
    before = before_of(out)
    assert update(str(out), "--remove", str(keys_file(tmp_path, second, "more.txt")), capsys=capsys)[0] == 0
    new = check_revision(before, out, set(second))
    assert new["revision"] == 2 and [h["revision"] for h in new["history"]] == [1, 2]
    assert new["history"][1]["previous_index_sha256"] == hashlib.sha256(r1).hexdigest()
    assert new["history"][1]["replaced"][0]["old"]["url"] == rewritten["url"]
    assert new["history"][1]["replaced"][0]["new"] == rewritten["url"].replace("-r1.", "-r2.")


def test_the_same_update_again_is_a_no_op(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = keys_file(tmp_path, spread_keys(out, 2))
    assert update(str(out), "--remove", str(keys), capsys=capsys)[0] == 0
    before = snapshot(out)
    rc, stdout, _ = update(str(out), "--remove", str(keys), capsys=capsys)
    assert rc == 0 and "nothing to do" in stdout and "2 lines" in stdout
    assert snapshot(out) == before


def test_unknown_keys_are_counted_by_line_never_printed(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = spread_keys(out, 2)
    secret = ["0123456789abcdef0123456789abcdef", "not-a-key-at-all"]
    p = tmp_path / "takedown.txt"
    p.write_text(f"# takedown of 2024-05-01\n{real[0]}\n\n{secret[0]}\n{real[1]}.jpeg\n{secret[1]}\n")
    rc, stdout, err = update(str(out), "--remove", str(p), capsys=capsys)
    assert rc == 0, err
    assert "2 lines of" in stdout and "(lines 4, 6)" in stdout
    assert not any(s in stdout + err for s in secret)
    assert not set(real) & set(sample_keys(out))  # a file name (key.jpeg) names its key too


def test_an_allowlist_with_another_key_column(
    out: Path, raw: fd.FakePassResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = fd.read_metadata(raw.metadata)
    gone = set(spread_keys(out, 3))
    allow = tmp_path / "ids.jsonl"
    allow.write_text(
        "".join(
            json.dumps({"image_id": k, "creator": r["unickname"]}) + "\n"
            for k, r in rows.items()
            if k not in gone
        )
    )
    before = snapshot(out)
    rc, _, err = update(str(out), "--metadata", str(allow), capsys=capsys)
    assert rc == 2 and "'hash'" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before
    before = before_of(out)
    rc, _, err = update(str(out), "--metadata", str(allow), "--key-column", "image_id", capsys=capsys)
    assert rc == 0, err
    check_revision(before, out, gone)
    assert index(out)["history"][0]["source"]["key_column"] == "image_id"


def test_removing_more_than_half_needs_yes(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = sample_keys(out)
    most = keys[: len(keys) * 2 // 3]
    before = snapshot(out)
    rc, _, err = update(str(out), "--remove", str(keys_file(tmp_path, most)), capsys=capsys)
    assert rc == 2 and "--yes" in err and f"{len(most)} of {len(keys)}" in err
    assert snapshot(out) == before
    rc, _, err = update(
        str(out), "--remove", str(keys_file(tmp_path, keys, "all.txt")), "--yes", capsys=capsys
    )
    assert rc == 2 and "every sample" in err and snapshot(out) == before
    rc, _, err = update(str(out), "--remove", str(keys_file(tmp_path, most)), "--yes", capsys=capsys)
    assert rc == 0, err
    assert sorted(sample_keys(out)) == sorted(set(keys) - set(most))


def test_dry_run_describes_and_writes_nothing(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = spread_keys(out, 5)
    before = snapshot(out)
    rc, stdout, err = update(str(out), "--remove", str(keys_file(tmp_path, gone)), "--dry-run", capsys=capsys)
    assert rc == 0, err
    assert snapshot(out) == before
    affected = len({revisions_position(before_of(out), k) for k in gone})
    assert "remove 5 samples" in stdout and f"from {affected} shards" in stdout
    assert (
        f"rewrite {affected} shards" in stdout
        and "would be deleted" in stdout
        and "nothing written" in stdout
    )
    # the figures are the ones the update then produces
    rc, real, _ = update(str(out), "--remove", str(keys_file(tmp_path, gone)), capsys=capsys)
    new = index(out)
    written = sum(e["filesize"] for e in new["shardlist"] if "-r1." in e["url"])
    assert f"({written / 1e6:,.1f} MB written" in stdout


@pytest.mark.parametrize("refresh", [False, True])
def test_refresh_metadata(
    out: Path, raw: fd.FakePassResult, tmp_path: Path, refresh: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = fd.read_metadata(raw.metadata)
    keys = sample_keys(out)
    renamed = keys[2:5]
    gone = keys[10:11]
    new_rows = [
        {**r, "unickname": "Corrected Name"} if k in renamed else r for k, r in rows.items() if k not in gone
    ]
    allow = tmp_path / "fixed.csv"
    fd.write_metadata(allow, new_rows)
    rc, stdout, _ = update(str(out), "--metadata", str(allow), "--dry-run", capsys=capsys)
    assert rc == 0 and "3 kept samples in" in stdout
    before = before_of(out)
    args = ["--refresh-metadata"] if refresh else []
    rc, stdout, err = update(str(out), "--metadata", str(allow), *args, capsys=capsys)
    assert rc == 0, err
    new = index(out)
    assert new["history"][0]["refreshed"] == (3 if refresh else 0)
    rewritten = {r["old"]["url"] for r in new["history"][0]["replaced"]}
    for e in new["shardlist"]:
        for key, members in tar_samples((out / e["url"]).read_bytes()):
            meta = json.loads(dict(members)[f"{key}.json"])
            assert meta["unickname"] == (
                "Corrected Name" if refresh and key in renamed else rows[key]["unickname"]
            )
            assert meta["_provenance"]["key"] == key
    attr = {r[0]: r for r in csv.reader(io.StringIO((out / "attribution.csv").read_text()))}
    assert all((attr[k][1] == "Corrected Name") == refresh for k in renamed)
    if refresh:  # the shards of the renamed samples were rewritten too, their image bytes unchanged
        old_images = {
            k: m
            for e in json.loads(before["index.json"][3])["shardlist"]
            if e["url"] in rewritten
            for k, ms in tar_samples(before[e["url"]][4])
            for m in ms
            if not m[0].endswith(".json")
        }
        for e in new["shardlist"]:
            for k, ms in tar_samples((out / e["url"]).read_bytes()):
                if k in old_images:
                    assert old_images[k] in ms
    assert all(c.ok for c in verify(str(out)))


def test_keep_superseded_then_the_next_update_deletes_them(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, stdout, _ = update(
        str(out),
        "--remove",
        str(keys_file(tmp_path, spread_keys(out, 2))),
        "--keep-superseded",
        capsys=capsys,
    )
    assert rc == 0 and "superseded shards (--keep-superseded)" in stdout
    kept = [r["old"] for r in index(out)["history"][0]["replaced"]]
    for e in kept:  # a reader of the old manifest can finish: every old shard is still there, unchanged
        assert (out / e["url"]).exists() and hashlib.sha256((out / e["url"]).read_bytes()).hexdigest() == e[
            "sha256"
        ]
    assert all(c.ok for c in verify(str(out)))
    rc, stdout, _ = update(
        str(out), "--remove", str(keys_file(tmp_path, spread_keys(out, 1), "b.txt")), capsys=capsys
    )
    assert rc == 0
    for e in kept:
        assert not (out / e["url"]).exists() and not (out / e["idx"]).exists()


def test_purge_superseded_alone_ends_the_grace_period(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = spread_keys(out, 2)
    assert (
        update(str(out), "--remove", str(keys_file(tmp_path, gone)), "--keep-superseded", capsys=capsys)[0]
        == 0
    )
    kept = [r["old"] for r in index(out)["history"][0]["replaced"]]
    manifest_before = (out / "index.json").read_bytes()
    rc, stdout, _ = update(str(out), "--purge-superseded", "--dry-run", capsys=capsys)
    assert (
        rc == 0
        and f"would delete {2 * len(kept)} superseded files" in stdout
        and (out / kept[0]["url"]).exists()
    )
    before = snapshot(out)
    rc, stdout, _ = update(str(out), "--purge-superseded", capsys=capsys)
    assert rc == 0 and "deleted superseded shards" in stdout
    after = snapshot(out)
    assert set(before) - set(after) == {n for e in kept for n in (e["url"], e["idx"])}
    assert all(after[n] == before[n] for n in after)  # nothing else touched, index.json included
    assert (out / "index.json").read_bytes() == manifest_before
    for key in gone:  # the takedown is now complete: no byte of it is left
        for name, data in contents(out).items():
            assert key.encode() not in data, (key, name)


# ------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    out: Path, raw: fd.FakePassResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text(json.dumps({"__kind__": "wids-shard-index-v1", "shardlist": []}))
    binary = tmp_path / "keys.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    latin = tmp_path / "keys.latin1"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    no_key = tmp_path / "nokey.csv"
    no_key.write_text("name,license\nx,y\n")
    keys = keys_file(tmp_path, spread_keys(out, 1))
    cases = [
        ([str(empty), "--remove", str(keys)], "is not a pass-wds output"),
        ([str(foreign), "--remove", str(keys)], "not written by make-shards"),
        ([str(tmp_path / "missing"), "--remove", str(keys)], "is not a pass-wds output"),
        ([str(out), "--remove", str(binary)], "is not a text file of keys"),
        ([str(out), "--remove", str(latin)], "is not a text file of keys"),
        ([str(out), "--remove", str(tmp_path / "nothere.txt")], "not found"),
        ([str(out), "--metadata", str(no_key)], "'hash'"),
        ([str(out), "--metadata", str(tmp_path / "nothere.csv")], "not found"),
        ([str(out), "--refresh-metadata", "--remove", str(keys)], "--refresh-metadata needs --metadata"),
        ([str(out)], "needs --metadata ALLOWLIST or --remove KEYS_FILE"),
        ([str(out), "--metadata", str(no_key), "--remove", str(keys)], "not allowed with"),
        ([str(out), "--purge-superseded", "--keep-superseded"], "exclude each other"),
    ]
    before = {p: snapshot(p) for p in (out, empty, foreign)}
    for args, expected in cases:
        rc, stdout, err = update(*args, capsys=capsys)
        assert rc == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and expected in err, (args, err)
        assert "Traceback" not in err
    assert {p: snapshot(p) for p in (out, empty, foreign)} == before
    assert not (tmp_path / "missing").exists()


def test_make_shards_refuses_to_treat_a_revision_as_its_own_conversion(
    out: Path, raw: fd.FakePassResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert update(str(out), "--remove", str(keys_file(tmp_path, spread_keys(out, 1))), capsys=capsys)[0] == 0
    before = snapshot(out)
    rc = make_shards_main(
        [
            *map(str, raw.tars),
            "--metadata",
            str(raw.metadata),
            "-o",
            str(out),
            "--shard-size",
            SHARD,
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "different conversion" in err
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------------- crashes


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAKE_SHARDS, "update", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture(scope="module")
def crash_reference(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted update (4 shards rewritten, 1 emptied) and its keys file."""
    root = tmp_path_factory.mktemp("crashref")
    ref = root / "out"
    shutil.copytree(base, ref)
    first = index(ref)["shardlist"][0]
    keys = sorted(set(parse_idx((ref / first["idx"]).read_text()).keys) | set(spread_keys(ref, 4)))
    kf = keys_file(root, keys)
    env = {**os.environ, "SOURCE_DATE_EPOCH": DATE}
    done = _cli([str(ref), "--remove", str(kf), "-j", "2"], env)
    assert done.returncode == 0, done.stderr
    assert len(index(ref)["history"][0]["replaced"]) >= 4
    return ref, kf


@pytest.mark.parametrize("point", [*CRASH_POINTS, "shard-done:2"])
def test_kill_9_anywhere_then_rerun_is_byte_identical(
    base: Path, crash_reference: tuple[Path, Path], tmp_path: Path, point: str
) -> None:
    ref, kf = crash_reference
    out = tmp_path / "out"
    shutil.copytree(base, out)
    env = {**os.environ, "SOURCE_DATE_EPOCH": DATE}
    killed = _cli([str(out), "--remove", str(kf), "-j", "2"], {**env, "PASS_WDS_TEST_CRASH": point})
    assert killed.returncode == -9, (point, killed.returncode, killed.stderr)
    rerun = _cli([str(out), "--remove", str(kf), "-j", "2"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert contents(out) == contents(ref)


# ---------------------------------------------------------------------------------------------------- S3


def _upload_tree(bucket: Any, prefix: str, folder: Path) -> None:
    for p in sorted(folder.iterdir()):
        if p.is_file():
            bucket.put(f"{prefix}/{p.name}", p.read_bytes())


def _bucket_contents(bucket: Any, prefix: str) -> dict[str, bytes]:
    return {k[len(prefix) + 1 :]: bucket.get(k) for k in bucket.keys(prefix + "/")}


@pytest.mark.parametrize("point", [None, "mid-shard", "index-written"])
def test_update_on_s3_matches_local_and_survives_kill_9(
    base: Path, crash_reference: tuple[Path, Path], s3: Any, point: str | None
) -> None:
    """The same update on S3 (moto) writes the bytes the local one writes; killed mid-shard (the upload never
    committed: these shards are below the multipart size, so it was still in the writer's buffer) or after the
    manifest swap, the rerun finishes it: no leftover object or upload."""
    ref, kf = crash_reference
    _upload_tree(s3, "pass", base)
    url = f"{s3.url}/pass"
    env = {**os.environ, "SOURCE_DATE_EPOCH": DATE, "AWS_ENDPOINT_URL": s3.server.endpoint}
    if point is not None:
        killed = _cli([url, "--remove", str(kf), "-j", "2"], {**env, "PASS_WDS_TEST_CRASH": point})
        assert killed.returncode == -9, killed.stderr
    done = _cli([url, "--remove", str(kf), "-j", "2"], env)
    assert done.returncode == 0, done.stderr
    assert _bucket_contents(s3, "pass") == contents(ref)
    assert s3.open_uploads() == []
    r = subprocess.run(
        [sys.executable, "-m", "pass_wds.cli", "verify", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# -------------------------------------------------------------------------------------------------- diff


def _diff(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    rc = pass_wds_main(["diff", *args])
    return rc, capsys.readouterr().out.splitlines()


def test_diff_two_outputs(
    base: Path, out: Path, raw: fd.FakePassResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = fd.read_metadata(raw.metadata)
    keys = sample_keys(out)
    gone, renamed = keys[::7][:4], keys[3:5]
    fixed = [{**r, "unickname": "Fixed"} if k in renamed else r for k, r in rows.items() if k not in gone]
    allow = tmp_path / "v2.csv"
    fd.write_metadata(allow, fixed)
    assert update(str(out), "--metadata", str(allow), "--refresh-metadata", capsys=capsys)[0] == 0
    rc, lines = _diff(capsys, str(base), str(out))
    assert rc == 1
    assert lines[2] == f"added 0, removed {len(gone)}, changed {len(renamed)}"
    assert [x[2:] for x in lines if x.startswith("- ")] == sorted(gone)
    assert [x[2:] for x in lines if x.startswith("~ ")] == sorted(renamed)
    rc, lines = _diff(capsys, str(out), str(base), "--summary")
    assert rc == 1 and lines[2] == f"added {len(gone)}, removed 0, changed {len(renamed)}" and len(lines) == 3
    rc, lines = _diff(capsys, str(base), str(base / "index.json"))
    assert rc == 0 and lines[2] == "added 0, removed 0, changed 0"


@pytest.mark.parametrize("record", [False, True])
def test_diff_two_revisions_manifests(
    out: Path, tmp_path: Path, record: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old index.json kept beside the new one: its replaced shards are deleted, so the diff tells what the
    history knows (the keys only where they were recorded)."""
    shutil.copy(out / "index.json", out / "index.r0.json")
    gone = spread_keys(out, 3)
    args = ["--record-keys"] if record else []
    assert update(str(out), "--remove", str(keys_file(tmp_path, gone)), *args, capsys=capsys)[0] == 0
    rc, lines = _diff(capsys, str(out / "index.r0.json"), str(out / "index.json"))
    assert rc == 1
    if record:
        assert lines[2] == "added 0, removed 3, changed 0" and [x[2:] for x in lines[3:]] == sorted(gone)
    else:
        assert lines[2] == "added 0, removed 0, changed 0"
        assert "3 removed keys are not listed" in lines[3] and revisions.keys_digest(gone) in lines[3]
        assert not any(k in "\n".join(lines) for k in gone)
    other = tmp_path / "other.json"
    other.write_text((out / "index.r0.json").read_text().replace('"seed": 0', '"seed": 1'))
    rc = pass_wds_main(["diff", str(other), str(out)])
    assert rc == 2 and "does not descend from it" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- readers


@pytest.mark.parametrize("keep", [True, False])
def test_a_reader_of_the_old_manifest_finishes_or_gets_one_clear_error(
    out: Path, tmp_path: Path, keep: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from pass_wds.loading import make_loader

    old_keys = sorted(sample_keys(out))
    loader = make_loader(str(out / "index.json"), batch_size=1, recipe=None, num_workers=0, shuffle=False)
    gone = spread_keys(out, 3)
    args = ["--keep-superseded"] if keep else []
    assert update(str(out), "--remove", str(keys_file(tmp_path, gone)), *args, capsys=capsys)[0] == 0
    if keep:  # the old revision, whole: never a sample of the new one
        assert sorted(k for b in loader for k in b["__key__"]) == old_keys
        return
    with pytest.raises(Exception) as e:
        list(loader)
    msg = str(e.value)
    assert "\n" not in msg and "not found" in msg and ("pass-0000" in msg), (
        msg
    )  # names the shard (or its .idx)


def test_a_takedown_of_a_rejected_key_removes_its_errors_record(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    rejected = next(e["key"] for e in errors if e["reason"] == "corrupt")
    shards = {e["url"]: (out / e["url"]).stat().st_mtime_ns for e in index(out)["shardlist"]}
    rc, stdout, err = update(str(out), "--remove", str(keys_file(tmp_path, [rejected])), capsys=capsys)
    assert rc == 0, err
    assert "dropped 1 records" in stdout
    new = index(out)
    assert (
        new["revision"] == 1
        and new["history"][0]["errors_dropped"] == 1
        and new["history"][0]["replaced"] == []
    )
    assert {e["url"]: (out / e["url"]).stat().st_mtime_ns for e in new["shardlist"]} == shards
    for name, data in contents(out).items():
        assert rejected.encode() not in data, name
    rc, stdout, _ = update(str(out), "--remove", str(keys_file(tmp_path, [rejected])), capsys=capsys)
    assert rc == 0 and "nothing to do" in stdout


def test_a_first_conversion_is_revision_0_with_its_dataset_version(
    raw: fd.FakePassResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v2"
    rc = make_shards_main(
        [*map(str, raw.tars), "--metadata", str(raw.metadata), "-o", str(out), "--shard-size", SHARD,
         "--no-progress", "--dataset-version", "v2"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    idx = index(out)
    assert (idx["revision"], idx["dataset_version"], idx["history"]) == (0, "v2", [])
    assert "dataset_version" not in idx["config"]
    assert update(str(out), "--remove", str(keys_file(tmp_path, spread_keys(out, 1))), capsys=capsys)[0] == 0
    assert index(out)["dataset_version"] == "v2"  # kept when an update names none


def test_a_malformed_history_is_one_line_naming_the_field(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """index.json is untrusted: a lineage that lies is refused by every reader before use."""
    assert update(str(out), "--remove", str(keys_file(tmp_path, spread_keys(out, 2))), capsys=capsys)[0] == 0
    good = index(out)
    more = keys_file(tmp_path, spread_keys(out, 1), "more.txt")
    bad_cases = [
        ({**good, "revision": 2}, "history"),
        ({**good, "history": [{**good["history"][0], "date": "yesterday"}]}, "history[0].date"),
        ({**good, "history": [{**good["history"][0], "removed": {"count": -1}}]}, "history[0].removed"),
        ({**good, "history": [{**good["history"][0], "replaced": [{"position": 0, "old": {"url": "x.tar", "nsamples": 2},
          "new": None, "removed": [[5, 10]]}]}]}, "history[0].replaced[0].removed"),
        ({**good, "dataset_version": 3}, "dataset_version"),
    ]  # fmt: skip
    for bad, field in bad_cases:
        (out / "index.json").write_text(json.dumps(bad))
        for argv in (["inspect", str(out)], ["verify", str(out)]):
            rc = pass_wds_main(argv)
            err = capsys.readouterr().err
            assert rc == 2 and field in err and len(err.strip().splitlines()) == 1, (argv, field, err)
        rc, _, err = update(str(out), "--remove", str(more), capsys=capsys)
        assert rc == 2 and field in err, (field, err)
