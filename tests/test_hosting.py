"""upload / urls / remote verify against moto's S3 server and a real HTTP server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeOutputs
from servers import Bucket, FaultProxy, HttpServer

from pass_wds import hosting, storage, verify
from pass_wds.format import manifest

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


@pytest.fixture(scope="module")
def local_out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB")


def _expected_keys(local_out: Path, prefix: str) -> list[str]:
    return sorted(f"{prefix}/{p.name}" for p in local_out.iterdir() if p.is_file())


def _writes(proxy: FaultProxy) -> list[str]:
    return [p.split("?")[0] for m, p, _ in proxy.requests if m in ("PUT", "POST")]


def test_upload_is_complete_ordered_and_resumable(local_out: Path, s3: Bucket, fault_proxy: object) -> None:
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    url = f"{s3.url}/datasets/pass"
    report = hosting.upload(str(local_out), url, workers=4, storage_options=so)
    assert s3.keys() == _expected_keys(local_out, "datasets/pass")
    for key in s3.keys():  # noqa: SIM118 (a method, not a dict)
        assert s3.get(key) == (local_out / key.rsplit("/", 1)[1]).read_bytes()
    assert report.uploaded[-1] == "index.json" and report.skipped == []
    assert _writes(proxy)[-1].endswith("/datasets/pass/index.json")  # the manifest is written last
    assert report.bytes_uploaded == sum(p.stat().st_size for p in local_out.iterdir() if p.is_file())

    proxy.requests.clear()
    again = hosting.upload(str(local_out), url, workers=4, storage_options=so)
    assert again.uploaded == [] and again.bytes_uploaded == 0
    assert sorted(again.skipped) == sorted(p.name for p in local_out.iterdir() if p.is_file())
    assert _writes(proxy) == []  # nothing transferred the second time


def test_verify_reuploads_a_corrupt_object_of_the_same_size(local_out: Path, s3: Bucket) -> None:
    so = s3.storage_options
    url = f"{s3.url}/pass"
    hosting.upload(str(local_out), url, storage_options=so)
    shard = manifest.load_index(str(local_out))["shardlist"][1]["url"]
    good = (local_out / shard).read_bytes()
    bad = bytearray(good)
    bad[1000] ^= 0xFF
    s3.put(f"pass/{shard}", bytes(bad))

    checks = verify.verify(url, so)  # remote verify names the bad shard
    assert [c.url.rsplit("/", 1)[1] for c in checks if not c.ok] == [shard]

    # equal sizes are common (the planner balances bytes): an object is skipped only when its sha256 matches
    plain = hosting.upload(str(local_out), url, storage_options=so)
    assert plain.uploaded == [shard, "index.json"]
    assert s3.get(f"pass/{shard}") == good
    assert all(c.ok for c in verify.verify(url, so))


def test_upload_into_a_foreign_prefix(local_out: Path, s3: Bucket) -> None:
    """A bucket prefix is only changed where pass-wds wrote it: foreign objects refuse the upload (unless
    --overwrite) and are never deleted or replaced."""
    so = s3.storage_options
    url = f"{s3.url}/mixed"
    s3.put("mixed/notes.txt", b"mine")
    s3.put("mixed/sub/keep.jpg", b"x")
    with pytest.raises(storage.StorageError, match=r"did not write \(notes\.txt, sub\)"):
        hosting.upload(str(local_out), url, storage_options=so)
    assert s3.keys("mixed/") == ["mixed/notes.txt", "mixed/sub/keep.jpg"]
    r = subprocess.run(
        [*PASS_WDS, "upload", str(local_out), url, "--storage-options", json.dumps(so)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "notes.txt" in r.stderr
    report = hosting.upload(str(local_out), url, storage_options=so, overwrite=True)
    assert report.uploaded[-1] == "index.json"
    assert s3.get("mixed/notes.txt") == b"mine" and s3.get("mixed/sub/keep.jpg") == b"x"
    again = hosting.upload(str(local_out), url, storage_options=so, overwrite=True)
    assert again.uploaded == []  # its own earlier upload is not foreign


def test_upload_never_replaces_a_foreign_object_under_our_name(local_out: Path, s3: Bucket) -> None:
    so = s3.storage_options
    url = f"{s3.url}/clash"
    shard = manifest.load_index(str(local_out))["shardlist"][0]["url"]
    s3.put(f"clash/{shard}", b"somebody else's archive")
    with pytest.raises(storage.StorageError, match=shard):
        hosting.upload(str(local_out), url, storage_options=so, overwrite=True)
    assert s3.get(f"clash/{shard}") == b"somebody else's archive"


def test_interrupted_upload_publishes_no_manifest(local_out: Path, s3: Bucket, tmp_path: Path) -> None:
    broken = tmp_path / "out"
    shutil.copytree(local_out, broken)
    shard = manifest.load_index(str(broken))["shardlist"][2]["url"]
    raw = bytearray((broken / shard).read_bytes())
    raw[700] ^= 0xFF  # same size, wrong bytes: the upload must refuse to publish it
    (broken / shard).write_bytes(bytes(raw))
    with pytest.raises(storage.StorageError, match="does not match its sha256"):
        hosting.upload(str(broken), f"{s3.url}/p", storage_options=s3.storage_options, workers=2)
    keys = s3.keys()
    assert "p/index.json" not in keys and f"p/{shard}" not in keys
    assert s3.open_uploads() == []


def test_different_dataset_is_refused_unless_overwrite(local_out: Path, s3: Bucket) -> None:
    so = s3.storage_options
    s3.put(
        "p/index.json",
        json.dumps({"__kind__": manifest.KIND, "plan_digest": "other", "shardlist": []}).encode(),
    )
    with pytest.raises(storage.StorageError, match="already holds a different dataset"):
        hosting.upload(str(local_out), f"{s3.url}/p", storage_options=so)
    assert s3.keys() == ["p/index.json"]
    hosting.upload(str(local_out), f"{s3.url}/p", storage_options=so, overwrite=True)
    assert s3.get("p/index.json") == (local_out / "index.json").read_bytes()


def test_urls_resolve_relative_entries(local_out: Path, s3: Bucket) -> None:
    index = manifest.load_index(str(local_out))
    names = [e["url"] for e in index["shardlist"]]
    n = len(names)
    assert n >= 3
    assert hosting.urls(str(local_out)) == [str(local_out / x) for x in names]
    assert hosting.urls(str(local_out / "index.json"), base="https://data.example.org/pass/v1") == [
        f"https://data.example.org/pass/v1/{x}" for x in names
    ]
    hosting.upload(str(local_out), f"{s3.url}/pass", storage_options=s3.storage_options)
    assert hosting.urls(f"{s3.url}/pass", storage_options=s3.storage_options) == [
        f"{s3.url}/pass/{x}" for x in names
    ]
    assert hosting.urls(f"{s3.url}/pass/index.json", brace=True, storage_options=s3.storage_options) == [
        f"{s3.url}/pass/pass-{{000000..{n - 1:06d}}}.tar"
    ]


def test_brace_patterns() -> None:
    names = [f"s3://b/p/pass-{i:06d}.tar" for i in (0, 1, 2, 5, 6, 9)] + ["s3://b/p/other.tar"]
    assert hosting.brace_patterns(names) == [
        "s3://b/p/pass-{000000..000002}.tar",
        "s3://b/p/pass-{000005..000006}.tar",
        "s3://b/p/pass-000009.tar",
        "s3://b/p/other.tar",
    ]
    import braceexpand

    expanded = [u for pat in hosting.brace_patterns(names) for u in braceexpand.braceexpand(pat)]
    assert expanded == names


def test_remote_verify_over_http(local_out: Path, http_server: HttpServer) -> None:
    shutil.copytree(local_out, http_server.root / "pass")
    url = f"{http_server.url}/pass"
    checks = verify.verify(url)
    assert len(checks) == len(manifest.load_index(str(local_out))["shardlist"]) and all(c.ok for c in checks)
    assert hosting.urls(url)[0] == f"{url}/pass-000000.tar"


def test_cli_upload_urls_verify_and_errors(local_out: Path, s3: Bucket) -> None:
    so = json.dumps(s3.storage_options)
    url = f"{s3.url}/cli"
    r = subprocess.run(
        [*PASS_WDS, "upload", str(local_out), url, "--workers", "3", "--storage-options", so],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "skipped 0 already present" in r.stdout and "testing" not in r.stdout
    r = subprocess.run(
        [*PASS_WDS, "urls", url, "--brace", "--storage-options", so],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(f"{url}/pass-{{000000..")
    r = subprocess.run(
        [*PASS_WDS, "verify", url, "--storage-options", so], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [*PASS_WDS, "upload", str(local_out), "s3://no-such-bucket-cli/x", "--storage-options", so],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "pass-wds: error: bucket 'no-such-bucket-cli' does not exist (s3://no-such-bucket-cli/x)"
    ]


def test_resumed_upload_sends_only_what_is_missing(local_out: Path, s3: Bucket) -> None:
    """State after an interrupted upload: some objects there, no manifest. The rerun fills in the rest."""
    so = s3.storage_options
    hosting.upload(str(local_out), f"{s3.url}/p", storage_options=so)
    shards = [e["url"] for e in manifest.load_index(str(local_out))["shardlist"]]
    missing = sorted([shards[0], shards[-1], "attribution.csv"])
    s3.client.delete_objects(
        Bucket=s3.bucket, Delete={"Objects": [{"Key": f"p/{k}"} for k in [*missing, "index.json"]]}
    )
    report = hosting.upload(str(local_out), f"{s3.url}/p", storage_options=so)
    assert sorted(report.uploaded[:-1]) == missing and report.uploaded[-1] == "index.json"
    assert s3.keys("p/") == _expected_keys(local_out, "p")
