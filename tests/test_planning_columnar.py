"""Planning with columns (issue 13): the Arrow/NumPy join, size estimate, plan and digest give exactly what
the per-item Python version gave. The hashes below were recorded from that version (commit 282b191) on the
same inputs; any change to a plan, a digest, a rejection or its order fails here. Re-pinned (issue 9) when
the sample JSON gained ``_provenance.crc32``: 17 more bytes per JSON change the metadata plan, its digest and
the sample conversion's shards; the plan without metadata, rejections and unmatched rows did not change.
The digests were re-pinned once more when the digest's format tag became ``pass-wds-shards-v2`` (so an output
written before the crc32 field is never resumed into one with it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pass_wds import ConvertConfig, make_shards
from pass_wds import fakedata as fd
from pass_wds.convert.inputs import InputItem, InputSpec, Listing, merge_listings
from pass_wds.convert.metadata import Metadata, read_metadata
from pass_wds.convert.planning import plan_shards
from pass_wds.convert.prepare import build_plan
from pass_wds.errors import InputError
from pass_wds.format.samples import estimate_json_size, estimate_json_sizes
from pass_wds.format.tar import sample_bytes

REPO = Path(__file__).resolve().parent.parent


def _h(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def _plan_hash(plan: object) -> str:
    return _h([list(plan.shards), plan.shard_bytes])  # type: ignore[attr-defined]


def _items(n: int, seed: int = 1) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    keys = [f"{i:032x}" for i in rng.permutation(n)]
    sizes = [sample_bytes(int(s), 300) for s in rng.integers(20_000, 120_000, n)]
    return keys, sizes


def test_plans_pinned() -> None:
    keys, sizes = _items(5000)
    plan = plan_shards(keys, sizes, target_bytes=20_000_000, seed=3)
    assert _plan_hash(plan) == "5daeb44dc1dea03f09262927a208da4efa5c375283c7a315e3dea8fa5f656a5f"
    plan = plan_shards(keys, sizes, target_bytes=10**12, seed=0, max_count=64)
    assert _plan_hash(plan) == "4c7ca870b55c180b142eb5d2f0a9154bff799b48cd1a3b10bcdfead5314577ce"
    # non-ASCII keys (UTF-8 byte order must equal Python's code point order) and many equal sizes (ties)
    keys = [f"k{i % 97}é{i}" if i % 3 else f"{i:05d}" for i in range(3000)]
    sizes = [sample_bytes(1000 * (i % 7) + 5, 200) for i in range(3000)]
    plan = plan_shards(keys, sizes, target_bytes=300_000, seed=11)
    assert _plan_hash(plan) == "297de6d11e51f86aa5a408523ee051017499908937160d776f4d9d37aa4b7968"
    assert plan_shards(pa.array(keys), np.asarray(sizes), target_bytes=300_000, seed=11).shards == plan.shards


@pytest.fixture(scope="module")
def listing_20k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Listing, Metadata]:
    d = tmp_path_factory.mktemp("listing-20k")
    fd.make_listing(d, 20000, parts=4, seed=2)
    raw = fd.read_listing(d / fd.LISTING_NAME)
    md = read_metadata(str(d / fd.METADATA_NAME))
    names = sorted(set(raw.sources))
    inputs = [InputSpec("/x/" + n, "tar") for n in names]
    index = {n: i for i, n in enumerate(names)}
    items = [
        InputItem(k, index[s], m, int(o), int(z))
        for k, s, m, o, z in zip(raw.keys, raw.sources, raw.members, raw.offsets, raw.sizes, strict=True)
    ]
    # 1,000 metadata rows without an image, and one key listed twice (in another archive, another member)
    items = [*items[:19000], InputItem(items[5].key, 3, f"other/{items[5].key}.jpg", 512, 1234)]
    return merge_listings(inputs, [Listing.of(inputs, items)]), md


def test_join_plan_digest_pinned(listing_20k: tuple[Listing, Metadata]) -> None:
    listing, md = listing_20k
    prep = build_plan(ConvertConfig(inputs=["x"], output="y", shard_size="64MB", seed=5), listing, md)
    assert prep.digest == "8c4521422e64a20f16bf975fc67b8cb65a315ae2131944e4107d3220beb1ac3f"
    assert _plan_hash(prep.plan) == "7b6805330840cd11339e7af782c09f53de177f71602a3ad098348fa8521dba24"
    assert len(prep.unmatched_metadata) == 1000 and len(prep.rejections) == 1
    assert _h([r.to_json() for r in prep.rejections]) == (
        "80a5b736aaae02f5837af5c084d0d365abd59ff90a92bdffbba4cba563db90ce"
    )
    assert _h(prep.unmatched_metadata) == "4739d429f7d623115fb9dfa934d51460499d998ab4ddc5ae2d03ec36a781a7f8"
    cfg = ConvertConfig(
        inputs=["x"], output="y", shard_size="64MB", seed=5, allow_missing_metadata=True, max_count=500
    )
    prep = build_plan(cfg, listing, None)
    assert prep.digest == "35ea19db75e3b14dc30db365b018e4f71c01a73cd2bf0cb8678b3f71c6117f2c"
    assert _plan_hash(prep.plan) == "e148211c302b19b7d4873dced8192dfd9616f54bf1738c9f378eb3ae6e08ceab"


def test_sample_conversion_pinned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_shards(
        ConvertConfig(
            inputs=[str(REPO / "sample/PASS.{0..1}.tar")],
            metadata=str(REPO / "sample/pass_metadata.csv"),
            output=str(out),
            shard_size="300KB",
            seed=4,
            progress=False,
        )
    )
    index = json.loads((out / "index.json").read_text())
    assert index["plan_digest"] == "b9fb5d800c83fd5ab92a21dcc436e633e25b2b0e980dda13de39b7276593c34f"
    assert _h([(e["url"], e["sha256"]) for e in index["shardlist"]]) == (
        "7e9702ea0849f71724e9e8036efdc008e341fa9a3114d67b9754f3d540330887"
    )
    assert hashlib.sha256((out / "errors.jsonl").read_bytes()).hexdigest() == (
        "6e6a59f8a7dfee211f18413b1c2bfda9bac52b094ac56d991bcd01c1956e5f52"
    )


def test_json_size_estimate_matches_per_item() -> None:
    keys = ["plain", 'quo"te', "back\\slash", "tab\there", "ünï", "ctl\x01", ""]
    members = [f"dir/{k}.jpeg" for k in keys]
    sizes = np.array([0, 9, 10, 99, 100, 123456789, 5], dtype=np.int64)
    rows = np.array([-1, 0, 5, 300, -1, 1, 2], dtype=np.int64)
    got = estimate_json_sizes(pa.array(keys), np.full(len(keys), 12), pa.array(members), sizes, rows)
    want = [
        estimate_json_size(k, "PASS.0.tar", m, int(z), None if r < 0 else int(r))
        for k, m, z, r in zip(keys, members, sizes, rows, strict=True)
    ]
    assert len(json.dumps("PASS.0.tar")) == 12
    assert got.tolist() == want


def test_metadata_duplicates_are_refused_and_rows_joined(tmp_path: Path) -> None:
    """A key on two rows is refused, naming it (issue 9: which row was meant cannot be guessed)."""
    p = tmp_path / "m.jsonl"
    rows = [{"hash": "a", "v": 1}, {"hash": "b", "v": 2}, {"hash": "a", "v": 3}, {"hash": "c", "v": "é"}]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError, match="key 'a' appears again in row 3"):
        read_metadata(str(p))
    q = tmp_path / "m2.jsonl"  # the same allowlist without the duplicate
    q.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:2] + rows[3:]), encoding="utf-8"
    )
    md = read_metadata(str(q))
    assert list(md) == ["a", "b", "c"] and md.duplicate_rows == 0
    assert md["a"] == '"hash":"a","v":1' and md["c"] == '"hash":"c","v":"é"'
    assert md.rows_of(pa.array(["c", "z", "a"])).tolist() == [2, -1, 0]
