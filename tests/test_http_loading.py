"""The loader streaming a hosted output over HTTP and S3 with faults: every sample exactly once."""

from __future__ import annotations

import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import FakeOutputs
from servers import Bucket, FaultProxy, HttpServer

from pass_wds import hosting
from pass_wds.loading import make_loader


@pytest.fixture(scope="module")
def local_out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("300KB")


def _all_keys(out: Path) -> list[str]:
    keys: list[str] = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tf:
            keys += sorted({m.name.split(".", 1)[0] for m in tf.getmembers()})
    return keys


def _epoch_keys(source: str, **kw: object) -> Counter[str]:
    loader = make_loader(source, batch_size=5, num_workers=0, recipe=None, **kw)  # type: ignore[arg-type]
    return Counter(k for batch in loader for k in batch["__key__"])


def test_dropped_connections_mid_shard_lose_and_duplicate_nothing(
    local_out: Path, http_server: HttpServer, fault_proxy: object
) -> None:
    shutil.copytree(local_out, http_server.root / "pass")
    expected = _all_keys(local_out)
    assert len(expected) == 40
    proxy: FaultProxy = fault_proxy(http_server.url)  # type: ignore[operator]
    proxy.drop_after(40_000, times=8)  # the first eight GETs (manifest, indexes, shards) break mid-body
    got = _epoch_keys(f"{proxy.url}/pass/index.json", shuffle=True, seed=1)
    assert got == Counter(expected)  # every sample exactly once
    assert not proxy._drops  # all eight faults were really hit
    tar_gets = [r for p, r in proxy.gets() if p.endswith(".tar")]
    assert any(r and not r.startswith("bytes=0-") for r in tar_gets)  # resumed mid-shard by range


def test_s3_with_throttling_and_the_node_cache(
    local_out: Path, s3: Bucket, fault_proxy: object, tmp_path: Path
) -> None:
    hosting.upload(str(local_out), f"{s3.url}/pass", storage_options=s3.storage_options)
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    expected = Counter(_all_keys(local_out))
    proxy.fail_first(2, status=503)
    cache = str(tmp_path / "cache")
    assert _epoch_keys(f"{s3.url}/pass/index.json", storage_options=so, cache_dir=cache) == expected
    shard_gets = len([p for p, _ in proxy.gets() if p.endswith(".tar")])
    assert shard_gets >= len(list(local_out.glob("*.tar")))
    # a second epoch over the same shards is served by the node cache: no shard is fetched again
    assert _epoch_keys(f"{s3.url}/pass/index.json", storage_options=so, cache_dir=cache, seed=5) == expected
    assert len([p for p, _ in proxy.gets() if p.endswith(".tar")]) == shard_gets
