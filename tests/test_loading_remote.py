"""Loader over real loopback servers (moto S3, range HTTP) and over make-shards output."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from conftest import DATA
from servers import Bucket, HttpServer
from shardkit import TinyRecipe, all_keys, write_shards

from pass_wds import ConvertConfig
from pass_wds.loading import make_loader

COUNTS = [9, 4, 11]


def test_s3_source_exact_and_resumable(s3: Bucket, tmp_path: Path) -> None:
    local = tmp_path / "shards"
    write_shards(local, COUNTS)
    for f in sorted(local.iterdir()):
        s3.put(f"data/{f.name}", f.read_bytes())
    src = f"{s3.url}/data/index.json"
    kw: dict[str, Any] = {"batch_size": 3, "num_workers": 2, "storage_options": s3.storage_options, "seed": 2}
    full = [b["__key__"] for b in make_loader(src, **kw)]
    assert sorted(k for b in full for k in b) == sorted(all_keys(COUNTS))  # 24 = 8 × 3: nothing dropped
    part = make_loader(src, **kw)
    head = [b["__key__"] for b in itertools.islice(part, 3)]
    resumed = make_loader(src, **kw)
    resumed.load_state_dict(part.state_dict())
    assert head + [b["__key__"] for b in resumed] == full


def test_http_node_cache_downloads_each_shard_once(http_server: HttpServer, tmp_path: Path) -> None:
    write_shards(http_server.root, COUNTS)
    src = f"{http_server.url}/index.json"
    loader = make_loader(
        src, batch_size=4, num_workers=2, cache_dir=str(tmp_path / "cache"), recipe=TinyRecipe()
    )
    for _ in range(2):
        keys = [k for b in loader for k in b["__key__"]]
        assert sorted(keys) == sorted(all_keys(COUNTS))
    for s in range(len(COUNTS)):
        assert len(http_server.gets(f"shard-{s:06d}.tar")) == 1, http_server.requests


def test_reads_make_shards_output(tmp_path: Path) -> None:
    from pass_wds import make_shards

    photos = tmp_path / "in"
    photos.mkdir()
    names = sorted(p.name for p in (DATA / "photos").glob("img2dataset__*.jpg"))
    names += sorted(p.name for p in (DATA / "photos").glob("exifsamples__*.jpg"))
    for n in names:
        (photos / n).write_bytes((DATA / "photos" / n).read_bytes())
    out = tmp_path / "out"
    make_shards(
        ConvertConfig(
            inputs=[str(photos)],
            output=str(out),
            shard_size="60KB",
            allow_missing_metadata=True,
            progress=False,
        )
    )
    loader = make_loader(str(out / "index.json"), batch_size=1, num_workers=2, recipe=TinyRecipe())
    assert len(loader.shards) > 2
    batches = list(loader)
    keys = [b["__key__"][0] for b in batches]
    assert len(keys) == len(set(keys)) == len(names)
    assert {k.split("__")[0] for k in keys} == {"img2dataset", "exifsamples"}
    assert all(b["json"][0]["_provenance"]["key"] == b["__key__"][0] for b in batches)
    assert loader.stats.errors == 0


def test_shuffle_report_on_s3_reads_only_index_json_and_idx(
    s3: Bucket, tmp_path: Path, fault_proxy: Any
) -> None:
    local = tmp_path / "shards"
    write_shards(local, [30, 25, 30, 20])
    for f in sorted(local.iterdir()):
        s3.put(f"data/{f.name}", f.read_bytes())
    proxy = fault_proxy(s3.server.endpoint)
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    loader = make_loader(
        f"{s3.url}/data", batch_size=4, num_workers=2, storage_options=so, world_size=2, rank=0
    )
    report = loader.shuffle_report()
    assert report.batches == 2 * (105 // 8) and report.reads > 0
    objects = [p.split("?")[0].rsplit("/", 1)[-1] for m, p, _ in proxy.requests if m == "GET"]
    assert objects and all(o == "index.json" or o.endswith(".idx") or o == "data" for o in objects), objects
    assert sorted(o for o in objects if o.endswith(".idx")) == sorted(f"shard-{s:06d}.idx" for s in range(4))
    assert not [p for m, p, _ in proxy.requests if ".tar" in p]  # not even a HEAD on a shard
