"""make-shards writing to S3 (moto's server process): same bytes as on disk, crash-safe, clear errors.

The bucket is watched with boto3 while conversions run: an object under a final shard name must always be
the complete, correct shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FakeOutputs
from servers import Bucket, FaultProxy, MotoServer, free_port, make_bucket

from pass_wds import fakedata as fd

MAKE_SHARDS = [
    sys.executable,
    "-c",
    "import sys; from pass_wds.cli import make_shards_main; sys.exit(make_shards_main())",
]
PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
SHARD = "150KB"


@pytest.fixture(scope="module")
def raw(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=90)


@pytest.fixture(scope="module")
def reference(raw: fd.FakePassResult, fake_outputs: FakeOutputs) -> Path:
    """The same conversion on local disk: what every S3 run must reproduce byte for byte."""
    return fake_outputs.output(raw, SHARD)


def _args(raw: fd.FakePassResult, output: str) -> list[str]:
    return [*map(str, raw.tars), "--metadata", str(raw.metadata), "--output", output, "--shard-size", SHARD]


def _run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _error_lines(stderr: str) -> list[str]:
    """The error lines (log lines start with ``[make-shards]``); the error must be the last line."""
    lines = stderr.strip().splitlines()
    errors = [x for x in lines if not x.startswith("[")]
    assert errors and lines[-1] == errors[-1], stderr
    return errors


def _env(endpoint: str) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint}


def _assert_matches_reference(bucket: Bucket, prefix: str, reference: Path) -> None:
    keys = bucket.keys(prefix + "/")
    names = sorted(k[len(prefix) + 1 :] for k in keys if "/" not in k[len(prefix) + 1 :])
    expected = sorted(p.name for p in reference.iterdir() if p.is_file())
    assert names == expected
    for name in expected:
        if name.endswith((".tar", ".idx")) or name == "attribution.csv":
            assert bucket.get(f"{prefix}/{name}") == (reference / name).read_bytes(), name
    index = json.loads(bucket.get(f"{prefix}/index.json"))
    ref = json.loads((reference / "index.json").read_text())
    assert index["shardlist"] == ref["shardlist"]
    assert bucket.open_uploads() == []


def _check_visible(bucket: Bucket, prefix: str, reference: Path, seen: set[str]) -> None:
    """Every object under a final shard name is the complete shard (never partial, never different)."""
    for key in bucket.keys(prefix + "/"):
        name = key.rsplit("/", 1)[1]
        if name.endswith((".tar", ".idx")) and key not in seen:
            assert bucket.get(key) == (reference / name).read_bytes(), f"partial or wrong object {key}"
            seen.add(key)


def test_make_shards_to_s3_matches_local_and_verifies(
    raw: fd.FakePassResult, reference: Path, s3: Bucket
) -> None:
    r = _run([*MAKE_SHARDS, *_args(raw, f"{s3.url}/pass/v1")], env=_env(s3.server.endpoint))
    assert r.returncode == 0, r.stderr
    _assert_matches_reference(s3, "pass/v1", reference)
    index = s3.get("pass/v1/index.json").decode()
    assert "testing" not in index and "testing" not in s3.get("pass/v1/stats.json").decode()  # no secrets
    r = _run([*PASS_WDS, "verify", f"{s3.url}/pass/v1"], env=_env(s3.server.endpoint))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([*MAKE_SHARDS, *_args(raw, f"{s3.url}/pass/v1")], env=_env(s3.server.endpoint))
    assert r.returncode == 0 and "already complete" in r.stdout + r.stderr


def _watch_until(
    proc: subprocess.Popen[str], bucket: Bucket, prefix: str, reference: Path, n: int
) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        _check_visible(bucket, prefix, reference, seen)
        if sum(k.endswith(".tar") for k in seen) >= n:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"conversion ended before {n} shards were visible: {proc.communicate()}")


def test_store_outage_mid_conversion_then_rerun_resumes(
    raw: fd.FakePassResult, reference: Path, s3: Bucket, fault_proxy: object
) -> None:
    """The connection to S3 is cut mid-run (the proxy stops listening); state survives, so the rerun resumes."""
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = json.dumps(
        {"client_kwargs": {"endpoint_url": proxy.url}, "config_kwargs": {"retries": {"max_attempts": 2}}}
    )
    cmd = [*MAKE_SHARDS, *_args(raw, f"{s3.url}/out"), "--storage-options", so, "--retry-seconds", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = _watch_until(proc, s3, "out", reference, 3)
        proxy.stop()
        _, err = proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "index.json" not in {k.rsplit("/", 1)[1] for k in s3.keys("out/")}  # no manifest for a failed run
    _check_visible(s3, "out", reference, seen)
    proxy.start()
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    assert "kept" in r.stdout + r.stderr  # completed shards of the first run were kept
    _assert_matches_reference(s3, "out", reference)


def test_s3_server_killed_mid_conversion_then_restarted(
    raw: fd.FakePassResult, reference: Path, moto_factory: object, aws_env: None
) -> None:
    server: MotoServer = moto_factory()  # type: ignore[operator]
    bucket = make_bucket(server)
    so = json.dumps({"config_kwargs": {"retries": {"max_attempts": 2}}})
    cmd = [*MAKE_SHARDS, *_args(raw, f"{bucket.url}/out"), "--storage-options", so, "--retry-seconds", "3"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(server.endpoint)
    )
    try:
        _watch_until(proc, bucket, "out", reference, 2)
        server.kill()
        proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert proc.returncode != 0
    server.start()  # moto keeps state in memory: the restarted server is empty
    bucket.client.create_bucket(Bucket=bucket.bucket)
    r = _run(cmd, env=_env(server.endpoint))
    assert r.returncode == 0, r.stderr
    _assert_matches_reference(bucket, "out", reference)


def test_missing_bucket_and_wrong_endpoint_exit_2(
    raw: fd.FakePassResult, moto_server: MotoServer, aws_env: None
) -> None:
    r = _run([*MAKE_SHARDS, *_args(raw, "s3://no-such-bucket-ms/out")], env=_env(moto_server.endpoint))
    assert r.returncode == 2
    assert _error_lines(r.stderr) == [
        "make-shards: error: bucket 'no-such-bucket-ms' does not exist (s3://no-such-bucket-ms/out)"
    ]
    names = [b["Name"] for b in moto_server.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-ms" not in names
    port = free_port()
    so = json.dumps(
        {
            "secret": "sEcReT-99",
            "key": "AKIAQQQ",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        }
    )
    r = _run([*MAKE_SHARDS, *_args(raw, "s3://bucket/out"), "--storage-options", so, "--retry-seconds", "2"])
    assert r.returncode == 2
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        f"make-shards: error: cannot connect to http://127.0.0.1:{port}"
    )
    assert "sEcReT" not in r.stderr and "AKIAQQQ" not in r.stderr
