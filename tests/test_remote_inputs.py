"""make-shards reads raw tars and metadata in place from S3 (moto server) and HTTP (range server): the
shards are byte-identical to a run over the same files on local disk."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
from conftest import FakeOutputs
from servers import Bucket, HttpServer

from pass_wds import ConvertConfig, make_shards
from pass_wds import fakedata as fd


@pytest.fixture(scope="module")
def raw(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=120, seed=4, bad=True)


@pytest.fixture(scope="module")
def local_out(raw: fd.FakePassResult, fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.output(raw, "2MB", brace=True)


def _same_output(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.name not in ("stats.json", "index.json"))
    assert names == sorted(p.name for p in b.iterdir() if p.name not in ("stats.json", "index.json"))
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_inputs_and_metadata_on_s3(
    raw: fd.FakePassResult, local_out: Path, s3: Bucket, tmp_path: Path
) -> None:
    d = raw.metadata.parent
    for name in ("PASS.0.tar", "PASS.1.tar", "pass_metadata.csv"):
        s3.put(f"raw/{name}", (d / name).read_bytes())
    out = tmp_path / "out"
    summary = make_shards(
        ConvertConfig(
            inputs=[f"{s3.url}/raw/PASS.{{0..1}}.tar"],
            metadata=f"{s3.url}/raw/pass_metadata.csv",
            output=str(out),
            shard_size="2MB",
            storage_options=s3.storage_options,
        )
    )
    assert summary.samples == len(raw.expected["accepted"])
    _same_output(local_out, out)


def test_inputs_and_metadata_over_http(
    raw: fd.FakePassResult, local_out: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    d = raw.metadata.parent
    for name in ("PASS.0.tar", "PASS.1.tar", "pass_metadata.csv"):
        shutil.copy(d / name, http_server.root / name)
    out = tmp_path / "out"
    make_shards(
        ConvertConfig(
            inputs=[f"{http_server.url}/PASS.{{0..1}}.tar"],
            metadata=f"{http_server.url}/pass_metadata.csv",
            output=str(out),
            shard_size="2MB",
            workers=2,
        )
    )
    _same_output(local_out, out)
    assert http_server.gets("PASS.0.tar"), "the archive was read from the server"
