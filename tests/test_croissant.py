"""croissant.json: written beside index.json, valid Croissant 1.0 (checked with mlcroissant), images readable
through mlcroissant; the JSON-LD structure is checked directly as well."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeOutputs

from pass_wds.format.croissant import CONFORMS_TO
from pass_wds.format.manifest import CROISSANT


@pytest.fixture(scope="module")
def out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB")


def test_croissant_describes_every_shard_and_column(out: Path) -> None:
    doc = json.loads((out / CROISSANT).read_text())
    index = json.loads((out / "index.json").read_text())
    assert doc["@type"] == "sc:Dataset" and doc["conformsTo"] == CONFORMS_TO
    assert doc["license"] == "https://creativecommons.org/licenses/by/4.0/"
    assert "Asano" in doc["citeAs"] and "Vedaldi" in doc["citeAs"] and "2021" in doc["citeAs"]
    assert doc["name"] == "pass" and doc["description"]
    files = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    assert [f["contentUrl"] for f in files] == [s["url"] for s in index["shardlist"]]
    for f in files:
        assert f["sha256"] == hashlib.sha256((out / f["contentUrl"]).read_bytes()).hexdigest()
        assert f["contentSize"] == f"{(out / f['contentUrl']).stat().st_size} B"
    samples = next(r for r in doc["recordSet"] if r["@id"] == "samples")
    names = [f["name"] for f in samples["field"]]
    meta = _first_sample_json(out)
    columns = [k for k in meta if k != "_provenance"]
    assert names == ["key", "image", *columns]
    types = {f["name"]: f["dataType"] for f in samples["field"]}
    assert types["image"] == "sc:ImageObject"
    for c in columns:
        v = meta[c]
        if isinstance(v, str):
            assert types[c] == "sc:Text", c
        elif isinstance(v, int | float):
            assert types[c] in ("sc:Integer", "sc:Float"), c


def _first_sample_json(out: Path) -> dict:  # type: ignore[type-arg]
    from pass_wds import verify

    idx = next(out.glob("*.idx")).read_text().splitlines()[1]
    meta = verify.find_sample(str(out), idx.split()[3].split(".")[0])
    assert meta is not None
    meta.pop("__shard__", None)
    return meta


_READ = """
import itertools, json, sys
import mlcroissant as mlc
ds = mlc.Dataset(jsonld=sys.argv[1])
issues = ds.metadata.ctx.issues
keys = []
for rec in itertools.islice(ds.records(record_set="images"), 8):
    key = rec["images/key"]
    keys.append([key.decode() if isinstance(key, bytes) else key, list(rec["images/image"].size)])
print(json.dumps({"errors": sorted(map(str, issues.errors)), "warnings": sorted(map(str, issues.warnings)),
                  "record_sets": [rs.uuid for rs in ds.metadata.record_sets], "keys": keys}))
"""


def test_mlcroissant_validates_it_and_reads_the_images(out: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlcroissant")
    # mlcroissant caches extracted archives by contentUrl alone (relative shard names repeat across outputs),
    # so each reader gets its own cache.
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-c", _READ, str(out / CROISSANT)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["errors"] == [] and got["warnings"] == [], got
    assert got["record_sets"] == ["images", "samples"]
    all_keys = {
        line.split()[3].split(".")[0] for p in out.glob("*.idx") for line in p.read_text().splitlines()[1:]
    }
    assert len(got["keys"]) == 8
    for key, (w, h) in got["keys"]:
        assert key in all_keys and w > 0 and h > 0
