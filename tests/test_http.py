"""Reading over HTTP through pass_wds.storage: a real range-capable server, with faults injected by a proxy."""

from __future__ import annotations

import os
import time

import pytest
from servers import FaultProxy, HttpServer

from pass_wds import storage

FAST = storage.RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, read_timeout=1.0)


@pytest.fixture
def blob(http_server: HttpServer) -> bytes:
    data = os.urandom(2_500_000)
    (http_server.root / "shards").mkdir()
    (http_server.root / "shards" / "pass-000000.tar").write_bytes(data)
    return data


def test_read_only_store_basics(http_server: HttpServer, blob: bytes) -> None:
    url = f"{http_server.url}/shards/pass-000000.tar"
    assert storage.exists(url)
    assert not storage.exists(f"{http_server.url}/shards/nope.tar")
    assert storage.file_size(url) == len(blob)
    assert storage.read_bytes(url) == blob
    with storage.open_stream(url, 123_456, 2_000_001) as f:
        assert f.read(10) == blob[123_456:123_466]
        assert f.read() == blob[123_466:2_000_001]
    with storage.open_read(url) as f:
        f.seek(2_400_000)
        assert f.read() == blob[2_400_000:]
    (http_server.root / "empty").write_bytes(b"")
    assert storage.read_bytes(f"{http_server.url}/empty") == b""
    with pytest.raises(storage.ReadOnlyError, match="read-only"):
        storage.write_bytes(f"{http_server.url}/x.bin", b"1")
    with pytest.raises(storage.ReadOnlyError):
        storage.makedirs(f"{http_server.url}/folder")


def test_end_beyond_object_is_an_error(http_server: HttpServer, blob: bytes) -> None:
    with (
        pytest.raises(storage.StorageError, match="has only 2500000"),
        storage.open_stream(f"{http_server.url}/shards/pass-000000.tar", 0, 3_000_000) as f,
    ):
        f.read()


def _offsets(proxy: FaultProxy) -> list[int]:
    return [int((r or "bytes=0-").split("=")[1].split("-")[0]) for _, r in proxy.gets()]


@pytest.mark.parametrize("start", [0, 777])
def test_dropped_connection_resumes_at_the_offset(
    http_server: HttpServer, blob: bytes, fault_proxy: object, start: int
) -> None:
    proxy: FaultProxy = fault_proxy(http_server.url)  # type: ignore[operator]
    proxy.drop_after(600_000, times=3)
    out = bytearray()
    with storage.open_stream(f"{proxy.url}/shards/pass-000000.tar", start, None, retry=FAST) as f:
        while chunk := f.read(65_536):
            out += chunk
    assert bytes(out) == blob[start:]
    offsets = _offsets(proxy)
    assert len(offsets) == 4 and offsets[0] == start
    assert offsets == sorted(set(offsets))  # every retry resumed further on: no restart from the beginning
    # the resumed requests carry the end of the range, so the server never sends more than was asked
    assert all(r.endswith(f"-{len(blob) - 1}") for _, r in proxy.gets()[1:])  # type: ignore[union-attr]


def test_stalled_connection_times_out_and_resumes(
    http_server: HttpServer, blob: bytes, fault_proxy: object
) -> None:
    proxy: FaultProxy = fault_proxy(http_server.url)  # type: ignore[operator]
    proxy.drop_after(300_000, times=1, stall=3.0)
    start = time.monotonic()
    with storage.open_stream(f"{proxy.url}/shards/pass-000000.tar", retry=FAST) as f:
        assert f.read() == blob
    assert time.monotonic() - start < 3.0  # gave up on the stalled connection after read_timeout
    assert len(_offsets(proxy)) == 2


def test_slow_but_live_stream_progresses(http_server: HttpServer) -> None:
    """read_timeout means "no byte for that long": a stream that trickles bytes, slower as a whole than the
    timeout allows for one buffered 1 MiB read, is read to the end on its first connection."""
    data = os.urandom(400_000)
    (http_server.root / "slow.tar").write_bytes(data)
    http_server.chunk_bytes, http_server.chunk_delay = 16_384, 0.08  # 25 chunks over ~2 s, 10x the gap
    policy = storage.RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, read_timeout=0.8)
    start = time.monotonic()
    out = bytearray()
    with storage.open_stream(f"{http_server.url}/slow.tar", retry=policy) as f:
        while chunk := f.read(65_536):  # buffered: each raw read asks for a whole 1 MiB chunk
            out += chunk
    assert bytes(out) == data
    assert time.monotonic() - start > 2 * policy.read_timeout  # slower as a whole than the timeout
    assert http_server.gets("slow.tar") == ["bytes=0-"]  # one connection: it never timed out


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(
    http_server: HttpServer, blob: bytes, fault_proxy: object, status: int
) -> None:
    proxy: FaultProxy = fault_proxy(http_server.url)  # type: ignore[operator]
    proxy.fail_first(2, status=status)
    with storage.open_stream(f"{proxy.url}/shards/pass-000000.tar", 5, 1005, retry=FAST) as f:
        assert f.read() == blob[5:1005]
    assert _offsets(proxy) == [5, 5, 5]


def test_persistent_failure_gives_up_after_bounded_tries(
    http_server: HttpServer, blob: bytes, fault_proxy: object
) -> None:
    proxy: FaultProxy = fault_proxy(http_server.url)  # type: ignore[operator]
    proxy.fail_first(100, status=503)
    with pytest.raises(storage.StorageError, match=r"giving up reading .* at byte 0 after 4 failed tries"):
        storage.open_stream(f"{proxy.url}/shards/pass-000000.tar", retry=FAST).read()
    assert len(proxy.gets()) == FAST.attempts


def test_permanent_errors_are_not_retried(http_server: HttpServer, blob: bytes) -> None:
    http_server.forbidden.add("shards/pass-000000.tar")
    with pytest.raises(storage.StoragePermissionError, match="HTTP 403"):
        storage.open_stream(f"{http_server.url}/shards/pass-000000.tar").read()
    assert len(http_server.gets("shards/pass-000000.tar")) == 1
    with pytest.raises(storage.StorageNotFoundError) as e:
        storage.open_stream(f"{http_server.url}/shards/missing.tar").read()
    assert str(e.value) == f"not found: {http_server.url}/shards/missing.tar"
    assert isinstance(e.value, FileNotFoundError)
    assert len(http_server.gets("shards/missing.tar")) == 1


def test_server_without_range_support(http_server: HttpServer, blob: bytes) -> None:
    http_server.ignore_ranges = True
    with storage.open_stream(f"{http_server.url}/shards/pass-000000.tar", 1_000_000, 1_000_100) as f:
        assert f.read() == blob[1_000_000:1_000_100]


def test_credentials_never_in_errors(http_server: HttpServer) -> None:
    url = (
        f"http://user:hunter22@127.0.0.1:{http_server.port}/shards/missing.tar?X-Amz-Signature=abcdef123&x=1"
    )
    with pytest.raises(storage.StorageError) as e:
        storage.open_stream(url).read()
    assert "hunter22" not in str(e.value) and "abcdef123" not in str(e.value)
    assert "X-Amz-Signature=***" in str(e.value)


def test_credentials_never_in_retry_logs(
    http_server: HttpServer, blob: bytes, fault_proxy: object, caplog: pytest.LogCaptureFixture
) -> None:
    proxy: FaultProxy = fault_proxy(http_server.url)  # type: ignore[operator]
    proxy.fail_first(2, status=503)
    url = f"http://user:hunter22@127.0.0.1:{proxy.port}/shards/pass-000000.tar?X-Amz-Signature=abcdef123"
    with (
        caplog.at_level("WARNING", logger="pass_wds.storage"),
        storage.open_stream(url, 0, 100, retry=FAST) as f,
    ):
        assert f.read() == blob[:100]
    assert len(caplog.records) == 2 and "retrying" in caplog.text
    assert "hunter22" not in caplog.text and "abcdef123" not in caplog.text


def test_redact() -> None:
    so = {"key": "AKIAXYZ", "secret": "s3cr3t/+=", "client_kwargs": {"endpoint_url": "http://minio:9000"}}
    text = (
        "GET https://bob:pw@host/p?X-Amz-Credential=AKIAXYZ%2F2024&X-Amz-Signature=ff00&Expires=1 failed "
        "with s3cr3t/+= and token=abc.def; Signature=zzz"
    )
    red = storage.redact(text, so)
    for secret in ("bob:pw", "AKIAXYZ", "ff00", "s3cr3t", "abc.def", "zzz"):
        assert secret not in red
    assert "https://***@host/p?" in red and "Expires=1" in red
