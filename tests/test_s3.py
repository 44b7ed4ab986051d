"""pass_wds.storage against moto's standalone S3 server (a real server process on loopback).

Every check looks at the bucket with boto3, independently of the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from servers import Bucket, FaultProxy, MotoServer, free_port, make_bucket

from pass_wds import storage

MiB = 1024 * 1024


def test_round_trip_and_listing(s3: Bucket) -> None:
    so = s3.storage_options
    data = os.urandom(300_000)
    storage.write_bytes(f"{s3.url}/ds/a.bin", data, so)
    storage.write_bytes(f"{s3.url}/ds/sub/b.txt", "héllo".encode(), so)
    assert s3.keys() == ["ds/a.bin", "ds/sub/b.txt"]
    assert s3.get("ds/a.bin") == data
    assert storage.read_bytes(f"{s3.url}/ds/a.bin", so) == data
    assert storage.read_text(f"{s3.url}/ds/sub/b.txt", so) == "héllo"
    assert storage.exists(f"{s3.url}/ds/a.bin", so)
    assert not storage.exists(f"{s3.url}/ds/zzz.bin", so)
    assert storage.file_size(f"{s3.url}/ds/a.bin", so) == len(data)
    assert storage.listdir(f"{s3.url}/ds", so) == ["a.bin", "sub"]
    assert storage.listdir(f"{s3.url}/nothing-here", so) == []
    with storage.open_stream(f"{s3.url}/ds/a.bin", 1000, 250_001, so) as f:
        assert f.read() == data[1000:250_001]
    with storage.open_read(f"{s3.url}/ds/a.bin", so) as f:
        f.seek(299_990)
        assert f.read() == data[299_990:]
    storage.write_bytes(f"{s3.url}/ds/empty", b"", so)
    assert s3.get("ds/empty") == b"" and storage.read_bytes(f"{s3.url}/ds/empty", so) == b""
    storage.remove(f"{s3.url}/ds/empty", so)
    storage.remove(f"{s3.url}/ds/a.bin", so)
    assert s3.keys() == ["ds/sub/b.txt"]


def test_environment_endpoint_works_without_storage_options(
    s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standard AWS configuration: AWS_ENDPOINT_URL (MinIO/Ceph style) plus credentials from the env."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    storage.write_bytes(f"{s3.url}/env/x.bin", b"via-env", None)
    assert s3.get("env/x.bin") == b"via-env"
    assert storage.read_bytes(f"{s3.url}/env/x.bin") == b"via-env"


@pytest.mark.parametrize("size", [4096, 12 * MiB], ids=["single-put", "multipart"])
def test_failed_writer_never_commits(s3: Bucket, size: int) -> None:
    so = s3.storage_options
    with (
        pytest.raises(RuntimeError, match="writer failed"),
        storage.atomic_write(f"{s3.url}/out/shard.tar", so, block_size=5 * MiB) as f,
    ):
        f.write(os.urandom(size))
        if size > 5 * MiB:  # a part has really been uploaded
            assert s3.open_uploads() == ["out/shard.tar"]
        raise RuntimeError("writer failed")
    import gc

    gc.collect()  # fsspec files close (and would commit) on garbage collection: make sure that is harmless
    assert s3.keys() == []
    assert s3.open_uploads() == []  # the multipart upload was aborted, not just left pending


def test_multipart_success_is_exact(s3: Bucket) -> None:
    data = os.urandom(11 * MiB + 123)
    with storage.atomic_write(f"{s3.url}/big.bin", s3.storage_options, block_size=5 * MiB) as f:
        for i in range(0, len(data), 1_000_000):
            f.write(data[i : i + 1_000_000])
    assert s3.get("big.bin") == data
    with storage.open_stream(f"{s3.url}/big.bin", 5 * MiB - 7, None, s3.storage_options) as f:
        assert f.read() == data[5 * MiB - 7 :]


def test_killed_writer_leaves_no_object(s3: Bucket, tmp_path: Path) -> None:
    """kill -9 of a process in the middle of a multipart upload: no object; remove_temp_files cleans up."""
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            from pass_wds import storage
            so = {s3.storage_options!r}
            with storage.atomic_write("{s3.url}/out/pass-000000.tar", so, block_size=5 * 1024 * 1024) as f:
                f.write(os.urandom(11 * 1024 * 1024))
                print("PARTS-SENT", flush=True)
                time.sleep(120)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "PARTS-SENT"
        assert s3.open_uploads() == ["out/pass-000000.tar"]
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert s3.keys() == []
    storage.write_bytes(f"{s3.url}/out/pass-000001.tar.tmp-0123456789ab", b"leftover", s3.storage_options)
    removed = storage.remove_temp_files(f"{s3.url}/out", s3.storage_options)
    assert sorted(removed) == ["pass-000000.tar (incomplete upload)", "pass-000001.tar.tmp-0123456789ab"]
    assert s3.open_uploads() == []
    assert s3.keys() == []


def test_missing_bucket_is_one_clear_line(moto_server: MotoServer, aws_env: None) -> None:
    so = {**moto_server.storage_options(), "secret": "sEcReT-value-42"}
    url = "s3://no-such-bucket-pwds/out"
    for op in (
        lambda: storage.makedirs(url, so),
        lambda: storage.listdir(url, so),
        lambda: storage.read_bytes(url + "/index.json", so),
        lambda: storage.check_writable(url, so),
    ):
        with pytest.raises(storage.StorageNotFoundError) as e:
            op()
        msg = str(e.value)
        assert msg == "bucket 'no-such-bucket-pwds' does not exist (s3://no-such-bucket-pwds/out" + (
            "/index.json)" if "index.json" in msg else ")"
        )
    # makedirs must never create the bucket as a side effect
    names = [b["Name"] for b in moto_server.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-pwds" not in names


def test_wrong_endpoint_is_one_clear_line_without_secrets(aws_env: None) -> None:
    port = free_port()  # nothing listens here
    so = {
        "key": "AKIAEXAMPLEKEY99",
        "secret": "sEcReT/value+42",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    fast = storage.RetryPolicy(seconds=2, read_timeout=2)  # refused is transient: retried, within 2 s here
    for op in (
        lambda: storage.read_bytes("s3://bucket/x.bin", so, retry=fast),
        lambda: storage.makedirs("s3://bucket/o", so, retry=fast),
    ):
        start = time.monotonic()
        with pytest.raises(storage.StorageConnectionError) as e:
            op()
        msg = str(e.value)
        assert "\n" not in msg
        assert f"cannot connect to http://127.0.0.1:{port}" in msg
        assert "AKIAEXAMPLEKEY99" not in msg and "sEcReT" not in msg
        assert time.monotonic() - start < 20


def test_permission_denied_is_clear_and_not_retried(s3: Bucket, fault_proxy: object) -> None:
    s3.put("k.bin", b"x" * 100)
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    proxy.fail_first(50, status=403)
    with (
        pytest.raises(storage.StoragePermissionError) as e,
        storage.open_stream(f"{s3.url}/k.bin", storage_options=so) as f,
    ):
        f.read()
    assert str(e.value).startswith(f"permission denied to read {s3.url}/k.bin")
    assert len(proxy.gets()) == 1  # no retry storm on a permanent error


def test_stream_resumes_over_s3_after_dropped_connections(s3: Bucket, fault_proxy: object) -> None:
    data = os.urandom(3 * MiB + 17)
    s3.put("shard.tar", data)
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    proxy.drop_after(1_000_000, times=2)
    with storage.open_stream(f"{s3.url}/shard.tar", 10, None, so) as f:
        got = f.read()
    assert got == data[10:]
    ranges = [r for _, r in proxy.gets()]
    assert len(ranges) == 3 and ranges[0] == "bytes=10-"
    offsets = [int(r.split("=")[1].split("-")[0]) for r in ranges]  # type: ignore[union-attr]
    assert offsets[0] < offsets[1] < offsets[2]  # resumed further on each time, never from the start


def test_slowdown_is_retried(s3: Bucket, fault_proxy: object) -> None:
    data = os.urandom(200_000)
    s3.put("t.bin", data)
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)  # type: ignore[operator]
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url}}
    proxy.fail_first(2, status=503)
    with storage.open_stream(f"{s3.url}/t.bin", storage_options=so) as f:
        assert f.read() == data
    assert len(proxy.gets()) == 3


def test_check_writable_and_restarted_server(moto_factory: object, aws_env: None) -> None:
    server: MotoServer = moto_factory()  # type: ignore[operator]
    bucket = make_bucket(server)
    bucket.storage_options["config_kwargs"] = {"retries": {"max_attempts": 2}}  # a dead server fails fast
    storage.check_writable(bucket.url + "/out", bucket.storage_options)
    assert bucket.keys() == []  # the probe is removed
    storage.write_bytes(bucket.url + "/a", b"1", bucket.storage_options)
    server.kill()
    with pytest.raises(storage.StorageError):  # refused is retried: for 2 s here, then one clear error
        storage.read_bytes(bucket.url + "/a", bucket.storage_options, retry=storage.RetryPolicy(seconds=2))
    server.start()  # same port, empty state: the cached session reconnects
    bucket.client.create_bucket(Bucket=bucket.bucket)
    storage.write_bytes(bucket.url + "/a", b"2", bucket.storage_options)
    assert storage.read_bytes(bucket.url + "/a", bucket.storage_options) == b"2"


def test_the_test_server_refuses_an_upload_cut_short_as_s3_does(s3: Bucket) -> None:
    """The fault tests rely on this: a PUT whose connection dies before Content-Length bytes leaves no object
    (real S3: IncompleteBody). moto's own development server would store the truncated body."""
    import socket

    with socket.create_connection(("127.0.0.1", s3.server.port), timeout=10) as sock:
        head = (
            f"PUT /{s3.bucket}/cut.tar HTTP/1.1\r\nHost: 127.0.0.1:{s3.server.port}\r\n"
            "Content-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 1000)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert b" 400 " in reply.split(b"\r\n", 1)[0] and b"IncompleteBody" in reply
    assert s3.keys() == []


def test_the_test_server_refuses_a_payload_that_does_not_match_its_declared_crc32(s3: Bucket) -> None:
    """The other half of what S3 checks (BadDigest); a matching checksum is stored as usual."""
    import base64
    import zlib

    from botocore.exceptions import ClientError

    data = b"shard bytes" * 100
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    with pytest.raises(ClientError, match="BadDigest"):
        s3.client.put_object(Bucket=s3.bucket, Key="bad.tar", Body=data, ChecksumCRC32="AAAAAA==")
    s3.client.put_object(Bucket=s3.bucket, Key="good.tar", Body=data, ChecksumCRC32=good)
    assert s3.keys() == ["good.tar"] and s3.get("good.tar") == data
