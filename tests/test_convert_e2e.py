"""End-to-end tests of make-shards against the spec (issue 2, ARCHITECTURE.md), through the real CLI.

Inputs are generated PASS-shaped tars (pass_wds.fakedata, with expected.json saying what must be kept and
rejected), the bundled sample, and real photos and hard images as image folders (tests/data; the shared corpus
in the cases marked ``corpus``). Outputs are
read back with upstream webdataset and wids and with tarfile, and checked for byte identity, metadata fidelity,
balance, determinism across worker counts, kill-and-resume identity, every bad-input class, verify, and the
CLI's argument errors.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOutputs, find_image
from PIL import Image

from pass_wds import fakedata as fd

REPO = Path(__file__).resolve().parent.parent
_EXE = shutil.which("make-shards")
MAKE_SHARDS = [_EXE] if _EXE else [sys.executable, "-m", "pass_wds.cli", "make-shards"]
PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
TAR_BLOCK = 512
# creator names that CSV readers such as pandas/pyarrow turn into null by default; the spec keeps text exactly
NULL_LOOKING = ("NA", "null", "NaN")


# ------------------------------------------------------------------------------------------------ helpers


def make_shards(*args: str | Path, check: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*MAKE_SHARDS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=240)
    if check and r.returncode != 0:
        raise AssertionError(f"make-shards failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def pass_wds(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PASS_WDS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)


def load_index(out: Path) -> dict[str, Any]:
    return json.loads((out / "index.json").read_text(encoding="utf-8"))


def shard_paths(out: Path) -> list[Path]:
    return [out / e["url"] for e in load_index(out)["shardlist"]]


def read_samples(out: Path) -> dict[str, dict[str, Any]]:
    """All samples of an output as {key: {"ext": image ext, "image": bytes, "json": dict, "shard": name}},
    checking on the way that every shard is plain ustar with fixed header fields and adjacent members."""
    samples: dict[str, dict[str, Any]] = {}
    header_fields: set[tuple[int, int, int, int]] = set()
    for shard in shard_paths(out):
        raw = shard.read_bytes()
        assert len(raw) % TAR_BLOCK == 0 and raw[-1024:] == b"\0" * 1024, f"{shard.name}: bad tar end"
        with tarfile.open(shard) as tf:
            members = tf.getmembers()
            assert len(members) % 2 == 0, f"{shard.name}: odd member count"
            for img, meta in zip(members[::2], members[1::2], strict=True):
                for m in (img, meta):
                    hdr = raw[m.offset : m.offset + TAR_BLOCK]
                    assert hdr[156:157] == b"0", f"{m.name}: not a plain regular-file header (pax/GNU?)"
                    assert hdr[257:265] == b"ustar\x0000", f"{m.name}: not ustar"
                    header_fields.add((m.mtime, m.uid, m.gid, m.mode))
                key, _, ext = img.name.partition(".")
                mkey, _, mext = meta.name.partition(".")
                assert key == mkey and mext == "json", f"{shard.name}: members of {key} not adjacent"
                assert key.isascii() and "." not in key and len(key) <= 128, key
                assert key not in samples, f"duplicate key {key} in output"
                samples[key] = {
                    "ext": ext,
                    "image": tf.extractfile(img).read(),  # type: ignore[union-attr]
                    "json": json.loads(tf.extractfile(meta).read()),  # type: ignore[union-attr]
                    "shard": shard.name,
                }
    assert len(header_fields) <= 1, f"tar headers differ in mtime/uid/gid/mode: {header_fields}"
    return samples


def errors(out: Path) -> list[dict[str, Any]]:
    path = out / "errors.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output_files(out: Path) -> dict[str, bytes]:
    """Every file under an output (relative name → bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_same_output(a: Path, b: Path) -> None:
    """Byte-identical shards and .idx files, and the same shard list in index.json."""
    ia, ib = load_index(a), load_index(b)
    assert ia["shardlist"] == ib["shardlist"]
    assert ia["totals"] == ib["totals"]
    for e in ia["shardlist"]:
        assert (a / e["url"]).read_bytes() == (b / e["url"]).read_bytes(), e["url"]
        idx = e.get("idx") or e["url"][:-4] + ".idx"
        assert (a / idx).read_bytes() == (b / idx).read_bytes(), idx


def assert_no_leftovers(out: Path) -> None:
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    assert not [n for n in names if ".tmp" in n or n.startswith("_state")], names


def check_idx(out: Path) -> None:
    """The DALI index beside each shard (v1.2) points at the exact bytes of every member."""
    for e in load_index(out)["shardlist"]:
        shard = out / e["url"]
        idx = out / (e.get("idx") or e["url"][:-4] + ".idx")
        lines = idx.read_text(encoding="ascii").splitlines()
        assert lines[0].split() == ["v1.2", str(e["nsamples"])]
        assert len(lines) - 1 == e["nsamples"]
        raw = shard.read_bytes()
        with tarfile.open(shard) as tf:
            by_name = {m.name: m for m in tf.getmembers()}
        for line in lines[1:]:
            tok = line.split()
            assert len(tok) % 4 == 0, line
            for ext, off, size, name in zip(tok[::4], tok[1::4], tok[2::4], tok[3::4], strict=True):
                m = by_name[name]
                assert name.endswith("." + ext) and int(off) == m.offset_data and int(size) == m.size, line
                assert len(raw[int(off) : int(off) + int(size)]) == m.size


def check_metadata(sample_json: dict[str, Any], row: dict[str, str], columns: tuple[str, ...]) -> None:
    """Every column in file order, nulls for empty cells, numbers for numeric columns, exact text."""
    assert list(sample_json)[: len(columns)] == list(columns)
    for c in columns:
        assert sample_json[c] == fd.expected_json_value(c, row[c]), (c, row[c], sample_json[c])
        if isinstance(sample_json[c], float | int):
            assert not isinstance(sample_json[c], bool)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clean_src(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=600, parts=3, seed=11, workers=2)


@pytest.fixture(scope="module")
def clean_shard_size(clean_src: fd.FakePassResult) -> int:
    total = sum(e["size"] + 1500 for e in clean_src.expected["accepted"].values())
    return total // 10  # ~10 shards of ~60 images


@pytest.fixture(scope="module")
def clean_w2(
    clean_src: fd.FakePassResult, clean_shard_size: int, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("clean-w2") / "out"
    src = clean_src.metadata.parent
    make_shards(
        f"{src}/PASS.{{0..2}}.tar", "--metadata", clean_src.metadata, "--output", out,
        "--shard-size", clean_shard_size, "--workers", 2, "--seed", 3,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def clean_w1(clean_src: fd.FakePassResult, clean_shard_size: int, fake_outputs: FakeOutputs) -> Path:
    """The same conversion through the library with one worker."""
    return fake_outputs.output(clean_src, clean_shard_size, workers=1, seed=3)


@pytest.fixture(scope="module")
def bad_src(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=80, seed=5, bad=True, workers=2)


@pytest.fixture(scope="module")
def bad_out(bad_src: fd.FakePassResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bad-out") / "out"
    src = bad_src.metadata.parent
    r = make_shards(
        f"{src}/PASS.*.tar", "-m", bad_src.metadata, "-o", out, "--shard-size", "1MB", "-j", 2, cwd=out.parent
    )
    return out, r.stdout + r.stderr


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "out"
    make_shards("--config", "configs/sample.yaml", "--output", out)
    return out


# ------------------------------------------------------------------------------------------- clean data


def test_help() -> None:
    for cmd in (MAKE_SHARDS, [*PASS_WDS, "make-shards"], [*PASS_WDS, "verify"], [*PASS_WDS, "inspect"]):
        r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr


def test_clean_lossless_and_faithful(clean_src: fd.FakePassResult, clean_w2: Path) -> None:
    exp = clean_src.expected
    samples = read_samples(clean_w2)
    assert set(samples) == set(exp["accepted"]), "samples lost or invented"
    rows = fd.read_metadata(clean_src.metadata)
    for key, s in samples.items():
        e = exp["accepted"][key]
        assert sha(s["image"]) == e["sha256"], f"{key}: image bytes changed"
        assert s["ext"] == "jpg"
        check_metadata(s["json"], rows[key], fd.COLUMNS)
        prov = s["json"]["_provenance"]
        assert list(s["json"])[-1] == "_provenance"
        assert Path(prov["source"]).name == e["archive"] and prov["member"] == e["member"]
        assert (prov["width"], prov["height"], prov["format"]) == (e["width"], e["height"], "JPEG")
    assert errors(clean_w2) == []
    # every hard creator name survived exactly (commas, quotes, newlines, 漢字, emoji, "007", "NA", ...)
    names = {s["json"]["unickname"] for s in samples.values()}
    assert set(fd.HARD_NAMES) <= names


def test_null_looking_text_is_kept(clean_src: fd.FakePassResult, clean_w2: Path) -> None:
    rows = fd.read_metadata(clean_src.metadata)
    got = {
        rows[k]["unickname"]: s["json"]["unickname"]
        for k, s in read_samples(clean_w2).items()
        if rows[k]["unickname"] in NULL_LOOKING
    }
    assert got == {n: n for n in NULL_LOOKING}
    with open(clean_w2 / "attribution.csv", encoding="utf-8", newline="") as f:
        att = {a["key"]: a["unickname"] for a in csv.DictReader(f)}
    assert {rows[k]["unickname"]: v for k, v in att.items() if rows[k]["unickname"] in NULL_LOOKING} == {
        n: n for n in NULL_LOOKING
    }


def test_clean_index_wids_and_webdataset(
    clean_src: fd.FakePassResult, clean_w2: Path, tmp_path: Path
) -> None:
    import webdataset as wds
    import wids

    index = load_index(clean_w2)
    assert index["__kind__"] == "wids-shard-index-v1" and index["wids_version"] == 1
    assert index["seed"] == 3 and isinstance(index["config"], dict)
    total = 0
    for e in index["shardlist"]:
        path = clean_w2 / e["url"]
        assert "/" not in e["url"] and path.is_file(), "shard urls must be relative"
        assert e["filesize"] == path.stat().st_size and e["sha256"] == sha(path.read_bytes())
        with tarfile.open(path) as tf:
            assert len(tf.getmembers()) == 2 * e["nsamples"]
        total += e["nsamples"]
    assert total == len(clean_src.expected["accepted"]) == index["totals"]["samples"]
    check_idx(clean_w2)

    accepted = clean_src.expected["accepted"]
    seen = Counter()
    for s in wds.WebDataset([str(p) for p in shard_paths(clean_w2)], shardshuffle=False):
        seen[s["__key__"]] += 1
        assert sha(s["jpg"]) == accepted[s["__key__"]]["sha256"]
        assert json.loads(s["json"])["hash"] == s["__key__"]
    assert seen == Counter(set(accepted))

    ds = wids.ShardListDataset(
        str(clean_w2 / "index.json"), cache_dir=str(tmp_path / "wids"), transformations=[]
    )
    assert len(ds) == total
    for i in (0, total // 2, total - 1):
        s = ds[i]
        data = s[".jpg"].read() if hasattr(s[".jpg"], "read") else s[".jpg"]
        assert sha(data) == accepted[s["__key__"]]["sha256"]


def _footprints(shard: Path) -> dict[str, int]:
    """Each sample's bytes in a shard: per member a 512-byte header plus the data padded to 512 bytes."""
    out: Counter[str] = Counter()
    with tarfile.open(shard) as tf:
        for m in tf:
            out[m.name.split(".", 1)[0]] += TAR_BLOCK + -(-m.size // TAR_BLOCK) * TAR_BLOCK
    return out


def test_clean_balance_and_shuffle(
    clean_src: fd.FakePassResult, clean_w2: Path, clean_shard_size: int
) -> None:
    index = load_index(clean_w2)["shardlist"]
    sizes = [e["filesize"] for e in index]
    assert len(sizes) == round(sum(sizes) / clean_shard_size), sizes  # the shard count follows the target
    footprints = [_footprints(clean_w2 / e["url"]) for e in index]
    for e, fp in zip(index, footprints, strict=True):
        assert e["filesize"] == sum(fp.values()) + 2 * TAR_BLOCK, e[
            "url"
        ]  # footprints account for every byte
    largest = max(max(fp.values()) for fp in footprints)
    # the guarantee: shards differ by at most one sample's footprint (the last shard included)
    assert max(sizes) - min(sizes) <= largest, (sizes, largest)
    samples = read_samples(clean_w2)
    by_shard: dict[str, set[str]] = {}
    for key, s in samples.items():
        by_shard.setdefault(s["shard"], set()).add(clean_src.expected["accepted"][key]["archive"])
    assert all(len(archives) == 3 for archives in by_shard.values()), "shards are not a random sample"


def test_clean_stats_json(clean_src: fd.FakePassResult, clean_w2: Path, clean_shard_size: int) -> None:
    """stats.json: every field, each equal to what the output and the input say independently."""
    stats = json.loads((clean_w2 / "stats.json").read_text())
    index = load_index(clean_w2)["shardlist"]
    sizes = [e["filesize"] for e in index]
    accepted = clean_src.expected["accepted"]
    mean = sum(sizes) / len(sizes)
    seconds = stats.pop("seconds")
    assert 0 < seconds < 240 and stats.pop("images_per_second") == pytest.approx(len(accepted) / seconds)
    assert stats == {
        "samples_written": len(accepted),
        "shards": len(index),
        "inputs_listed": len(accepted) + len(clean_src.expected["rejected"]),
        "rejected": {},
        "rejected_total": 0,
        "metadata_rows": len(fd.read_metadata(clean_src.metadata)),
        "metadata_without_image": len(clean_src.expected["metadata_without_image"]),
        "bytes": {"input_images": sum(e["size"] for e in accepted.values()), "output": sum(sizes)},
        "shard_bytes": {
            "min": min(sizes),
            "max": max(sizes),
            "mean": pytest.approx(mean),
            "max_dev_pct": pytest.approx(max(abs(s - mean) for s in sizes) / mean * 100),
            "target": clean_shard_size,
        },
        "shard_samples": {"min": min(e["nsamples"] for e in index), "max": max(e["nsamples"] for e in index)},
        "workers": 2,
    }


def test_clean_attribution(clean_src: fd.FakePassResult, clean_w2: Path) -> None:
    rows = fd.read_metadata(clean_src.metadata)
    with open(clean_w2 / "attribution.csv", encoding="utf-8", newline="") as f:
        att = list(csv.DictReader(f))
    assert len(att) == len(clean_src.expected["accepted"])
    for a in att:
        assert "unickname" in a and "license" in a and "url" in a, list(a)
        key = a.get("key") or a.get("hash")
        assert key is not None
        r = rows[key]
        assert (a["unickname"], a["license"], a["url"]) == (r["unickname"], r["license"], r["url"])


def test_deterministic_across_workers(clean_w1: Path, clean_w2: Path) -> None:
    assert_same_output(clean_w1, clean_w2)
    assert_no_leftovers(clean_w1)
    assert_no_leftovers(clean_w2)


def test_kill_9_then_resume_is_identical(
    clean_src: fd.FakePassResult, clean_shard_size: int, clean_w1: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    src = clean_src.metadata.parent
    args = [
        *MAKE_SHARDS, f"{src}/PASS.{{0..2}}.tar", "--metadata", str(clean_src.metadata), "--output", str(out),
        "--shard-size", str(clean_shard_size), "--workers", "1", "--seed", "3",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    killed = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(list(out.glob("pass-*.tar"))) >= 2:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole job, like a crashed node
                killed = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed, "make-shards finished before it could be killed; make the input larger"
    assert not (out / "index.json").exists(), "index.json must be written last"
    assert len(list(out.glob("pass-*.tar"))) < len(load_index(clean_w1)["shardlist"])
    r = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert_same_output(out, clean_w1)
    assert_no_leftovers(out)


def test_rerun_with_other_options_is_refused(sample_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(sample_out, out)
    before = output_files(out)
    r = make_shards("--config", "configs/sample.yaml", "--output", out, "--seed", 1, check=False)
    assert r.returncode != 0 and r.stderr.strip(), "changing the seed of an existing output must be refused"
    assert output_files(out) == before
    make_shards("--config", "configs/sample.yaml", "--output", out, "--seed", 1, "--overwrite")
    assert load_index(out)["seed"] == 1
    assert_no_leftovers(out)


# --------------------------------------------------------------------------------------------- bad inputs


def _refers_to(err: dict[str, Any], rej: dict[str, Any]) -> bool:
    return err.get("key") == rej["key"] and Path(str(err.get("source", ""))).name == rej["archive"]


def test_bad_inputs_rejected_good_kept(bad_src: fd.FakePassResult, bad_out: tuple[Path, str]) -> None:
    out, log = bad_out
    exp = bad_src.expected
    samples = read_samples(out)
    assert set(samples) == set(exp["accepted"]), "good samples lost or bad ones written"
    for key, e in exp["accepted"].items():
        s = samples[key]
        assert sha(s["image"]) == e["sha256"], key
        assert s["ext"] == e["ext"], f"{key}: {e['format']} bytes written as .{s['ext']}"
        assert s["json"]["_provenance"]["format"] == e["format"]
    written = {sha(s["image"]) for s in samples.values()}
    errs = errors(out)
    for e in errs:
        assert {"key", "source", "reason"} <= set(e), e
        assert e["reason"] in fd.REASONS, e
    for rej in exp["rejected"]:
        if rej["note"] == "directory member":
            continue  # see test_directory_member_is_reported
        matching = [e for e in errs if _refers_to(e, rej)]
        assert [e["reason"] for e in matching] == [rej["reason"]], (rej, matching)
        if "sha256" in rej:
            assert rej["sha256"] not in written
    assert "rejected" in log and "errors.jsonl" in log, "the summary must report rejections"


def test_directory_member_is_reported(bad_src: fd.FakePassResult, bad_out: tuple[Path, str]) -> None:
    out, _ = bad_out
    (rej,) = [r for r in bad_src.expected["rejected"] if r["note"] == "directory member"]
    assert [e["reason"] for e in errors(out) if _refers_to(e, rej)] == ["not-a-regular-file"]


def test_unsafe_members_never_written(bad_src: fd.FakePassResult, bad_out: tuple[Path, str]) -> None:
    out, _ = bad_out
    for rej in bad_src.expected["rejected"]:
        if rej["reason"] == "unsafe-path":
            name = f"pass_wds_escape_{rej['key']}"
            for base in (
                Path("/tmp"),
                out,
                out.parent,
                out.parent.parent,
                out.parent.parent.parent,
                REPO.parent,
            ):
                assert not (base / name).exists(), f"{base / name} was created"
    assert not any(".." in p.parts for p in out.rglob("*"))


def test_metadata_without_image_listed(bad_src: fd.FakePassResult, bad_out: tuple[Path, str]) -> None:
    out, _ = bad_out
    from pass_wds.format import manifest

    listed = set((out / manifest.UNMATCHED).read_text(encoding="utf-8").split())
    assert set(bad_src.expected["metadata_without_image"]) <= listed
    assert not listed & set(bad_src.expected["accepted"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["metadata_without_image"] == len(listed)


def test_allow_missing_metadata_keeps_the_image(bad_src: fd.FakePassResult, tmp_path: Path) -> None:
    src = bad_src.metadata.parent
    out = tmp_path / "out"
    make_shards(f"{src}/PASS.{{0..1}}.tar", "-m", bad_src.metadata, "-o", out, "--allow-missing-metadata")
    (miss,) = [r for r in bad_src.expected["rejected"] if r["reason"] == "missing-metadata"]
    samples = read_samples(out)
    assert sha(samples[miss["key"]]["image"]) == miss["sha256"]
    assert set(samples) == set(bad_src.expected["accepted"]) | {miss["key"]}
    assert not [e for e in errors(out) if e["key"] == miss["key"]]


# ------------------------------------------------------------------------------------- bundled sample


def test_sample_demo(sample_out: Path) -> None:
    samples = read_samples(sample_out)
    assert len(samples) == 36
    assert 4 <= len(load_index(sample_out)["shardlist"]) <= 6
    assert sorted(e["reason"] for e in errors(sample_out)) == ["corrupt", "missing-metadata"]
    assert [k for k, s in samples.items() if s["ext"] == "png"] and all(
        s["image"].startswith(b"\x89PNG") == (s["ext"] == "png") for s in samples.values()
    )
    with open(REPO / "sample/pass_metadata.csv", encoding="utf-8", newline="") as f:
        rows = {r["hash"]: r for r in csv.DictReader(f)}
    for key, s in samples.items():
        assert s["json"]["unickname"] == rows[key]["unickname"] and s["json"]["latitude"] is None
        assert hashlib.md5(s["image"]).hexdigest() == key  # sample hashes are md5 of the stored bytes
    assert pass_wds("verify", sample_out).returncode == 0
    r = pass_wds("inspect", sample_out)
    assert r.returncode == 0 and "36" in r.stdout


def test_verify_names_corrupted_shards(sample_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(sample_out, out)
    names = [e["url"] for e in load_index(out)["shardlist"]]
    flipped, truncated = out / names[1], out / names[-1]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-2048])
    r = pass_wds("verify", out)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert names[1] in text and names[-1] in text
    bad_lines = [line for line in text.splitlines() if names[0] in line]
    assert not bad_lines, f"a good shard was reported: {bad_lines}"


# ------------------------------------------------------------------------------------- argument errors


def _fails_cleanly(r: subprocess.CompletedProcess[str], out: Path, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {r.stderr!r}"
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not out.exists() or not any(out.iterdir()), "something was written"


def test_argument_errors(tmp_path: Path) -> None:
    tars = "sample/PASS.{0..1}.tar"
    meta = "sample/pass_metadata.csv"
    out = tmp_path / "out"
    _fails_cleanly(make_shards("sample/PASS.7.tar", "-m", meta, "-o", out, check=False), out, "PASS.7.tar")
    _fails_cleanly(make_shards(tars, "-m", tmp_path / "nope.csv", "-o", out, check=False), out, "nope.csv")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet\n")
    _fails_cleanly(make_shards(tars, "-m", garbage, "-o", out, check=False), out, "garbage.parquet")
    _fails_cleanly(
        make_shards(tars, "-m", meta, "-o", out, "--key-column", "nosuch", check=False), out, "nosuch"
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _fails_cleanly(make_shards(tars, "-m", meta, "-o", blocker / "out", check=False), blocker / "out")
    _fails_cleanly(make_shards(tars, "-m", meta, "-o", blocker, check=False), out)
    assert blocker.read_text() == "x"
    _fails_cleanly(make_shards(tars, "-m", meta, check=False), out, "output")


# ------------------------------------------------------------------- real photos (tests/data, then the corpus)


def test_photos_as_folder(image_root: Path, tmp_path: Path) -> None:
    photos = sorted(p for p in (image_root / "photos").iterdir() if p.is_file())
    meta = tmp_path / "photos.csv"
    with open(meta, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "creator", "bytes"])
        for p in photos:
            w.writerow([p.stem, f"credit for {p.stem}, «{p.suffix}»", p.stat().st_size])
    out = tmp_path / "out"
    make_shards(
        image_root / "photos", "-m", meta, "--key-column", "name", "-o", out, "--shard-size", "4MB", "-j", 2
    )
    assert errors(out) == []
    samples = read_samples(out)
    by_member = {s["json"]["_provenance"]["member"]: s for s in samples.values()}
    assert sorted(by_member) == [p.name for p in photos]
    for p in photos:
        s = by_member[p.name]
        data = p.read_bytes()
        assert s["image"] == data, p.name
        with Image.open(p) as im:
            fmt, size = im.format, im.size
        assert s["ext"] == {"JPEG": "jpg", "PNG": "png"}[fmt], p.name
        prov = s["json"]["_provenance"]
        assert (prov["width"], prov["height"], prov["format"]) == (*size, fmt)
        assert s["json"]["name"] == p.stem and s["json"]["bytes"] == len(data)
        assert s["json"]["creator"] == f"credit for {p.stem}, «{p.suffix}»"
    import webdataset as wds

    assert sum(1 for _ in wds.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False)) == len(
        photos
    )
    assert pass_wds("verify", out).returncode == 0


def _pillow_verdict(path: Path) -> str:
    """'ok', 'bomb' or 'bad': what a full decode with Pillow's default limits says."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
        return "ok"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "bomb"
    except Exception:
        return "bad"


def test_hard_images_as_folder(image_root: Path, tmp_path: Path) -> None:
    files = sorted(p for p in (image_root / "hard-images").iterdir() if p.is_file())
    out = tmp_path / "out"
    make_shards(
        image_root / "hard-images", "--allow-missing-metadata", "-o", out, "--shard-size", "3MB", "-j", 2
    )
    samples = read_samples(out)
    written = {s["json"]["_provenance"]["member"]: s for s in samples.values()}
    errs = errors(out)
    rejected: dict[str, list[str]] = {}
    for e in errs:
        name = Path(str(e.get("member") or e.get("source"))).name
        rejected.setdefault(name, []).append(e["reason"])
    stems = Counter(fd_key(p.name) for p in files)
    for p in files:
        name = p.name
        assert (name in written) != (name in rejected), (
            f"{name}: written={name in written} rejected={rejected.get(name)}"
        )
        if name in rejected:
            assert len(rejected[name]) == 1, (name, rejected[name])
        verdict = _pillow_verdict(p)
        if verdict != "ok":
            assert name in rejected, f"{name}: Pillow cannot decode it ({verdict}) but it was written"
            if verdict == "bomb":
                assert rejected[name] == ["decompression-bomb"], name
            elif stems[fd_key(name)] == 1:
                assert rejected[name][0] in ("corrupt", "not-an-image", "empty"), (name, rejected[name])
        if name in written:
            s = written[name]
            assert s["image"] == p.read_bytes(), f"{name}: bytes changed"
            with Image.open(p) as im:
                fmt = im.format
            if s["ext"] == "jpg":
                assert s["image"][:2] == b"\xff\xd8", name
            if s["ext"] == "png":
                assert s["image"][:8] == b"\x89PNG\r\n\x1a\n", name
            if fmt == "PNG":
                assert s["ext"] == "png", name
        elif verdict == "ok" and stems[fd_key(name)] == 1 and p.suffix.lower() in (".jpg", ".png"):
            pytest.fail(f"{name}: Pillow decodes it fully but it was rejected: {rejected[name]}")
    # files sharing a key: exactly one kept or rejected for its content, the others are duplicates
    for stem, n in stems.items():
        if n > 1:
            group = [p.name for p in files if fd_key(p.name) == stem]
            dups = [g for g in group if rejected.get(g) == ["duplicate-key"]]
            assert len(dups) == n - 1, (stem, {g: rejected.get(g, "written") for g in group})


def fd_key(name: str) -> str:
    """The key make-shards derives from a file name: the name without its last extension."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


# ---------------------------------------------------------------------------- other formats and options


def _typed_rows(csv_path: Path) -> list[dict[str, Any]]:
    return [
        {c: fd.expected_json_value(c, row[c]) for c in fd.COLUMNS}
        for row in fd.read_metadata(csv_path).values()
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_metadata_formats(fmt: str, bad_src: fd.FakePassResult, tmp_path: Path) -> None:
    """The same rows as JSON Lines, JSON or Parquet give the same sample JSON (typed values kept exactly)."""
    rows = _typed_rows(bad_src.metadata)
    meta = tmp_path / f"meta.{fmt}"
    if fmt == "jsonl":
        meta.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        meta.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {
            "dateuploaded": pa.int64(),
            "photoid": pa.int64(),
            "latitude": pa.float64(),
            "longitude": pa.float64(),
        }
        schema = pa.schema([(c, types.get(c, pa.string())) for c in fd.COLUMNS])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), meta)
    out = tmp_path / "out"
    src = bad_src.metadata.parent
    make_shards(f"{src}/PASS.{{0..1}}.tar", "-m", meta, "-o", out)
    samples = read_samples(out)
    assert set(samples) == set(bad_src.expected["accepted"])
    by_key = {r["hash"]: r for r in rows}
    for key, s in samples.items():
        assert {c: s["json"][c] for c in fd.COLUMNS} == by_key[key], key
        assert list(s["json"])[: len(fd.COLUMNS)] == list(fd.COLUMNS)


def test_max_count(sample_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_shards("--config", "configs/sample.yaml", "--output", out, "--max-count", 5)
    counts = [e["nsamples"] for e in load_index(out)["shardlist"]]
    assert max(counts) <= 5 and sum(counts) == sum(e["nsamples"] for e in load_index(sample_out)["shardlist"])


def test_reencode_applies_exif_orientation(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for n in (1, 6, 8):  # stored 600x450 (1) and 450x600 with EXIF rotations (6, 8): all display 600x450
        shutil.copy(find_image(f"sharp__Landscape_{n}.jpg"), src / f"landscape{n}.jpg")
    out = tmp_path / "out"
    make_shards(src, "--allow-missing-metadata", "-o", out, "--resize-max-side", 100, "--quality", 80)
    samples = read_samples(out)
    assert sorted(samples) == ["landscape1", "landscape6", "landscape8"]
    for key, s in samples.items():
        with Image.open(io.BytesIO(s["image"])) as im:
            assert im.format == "JPEG" and im.size == (100, 75), (key, im.size)
        prov = s["json"]["_provenance"]
        assert (prov["width"], prov["height"]) == (100, 75)
        assert {prov["original_width"], prov["original_height"]} == {600, 450}
    # upright, not just landscape: each rotated image matches the unrotated one better than its 180° turn
    import numpy as np

    def pixels(key: str) -> Image.Image:
        return Image.open(io.BytesIO(samples[key]["image"])).convert("L")

    ref = np.asarray(pixels("landscape1"), dtype=np.float32)
    for key in ("landscape6", "landscape8"):
        im = pixels(key)
        same = np.abs(np.asarray(im, dtype=np.float32) - ref).mean()
        flipped = np.abs(np.asarray(im.rotate(180), dtype=np.float32) - ref).mean()
        assert same < flipped, (key, same, flipped)
