"""Real servers on loopback for storage tests: moto's S3 server process, a range-capable HTTP server and a
fault-injecting HTTP proxy.

Use from a test module with ``pytest_plugins = ["tests.servers"]`` (tests/conftest.py registers it for the
whole suite). Every server binds 127.0.0.1 on a free port; nothing leaves the machine.

Fixtures:
    moto_server      session-wide moto S3 server (subprocess), ``.endpoint``
    s3               a fresh bucket per test: ``.url``, ``.bucket``, ``.storage_options``, ``.client`` (boto3)
    moto_factory     start extra moto servers that a test may kill and restart (``.kill()``, ``.start()``)
    http_server      a threaded range-capable HTTP server over a fresh temporary folder (``.root``, ``.url``)
    fault_proxy      factory: ``fault_proxy(upstream_url)`` → FaultProxy with ``fail_first``/``drop_after``/``stall``
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on 127.0.0.1:{port} did not start within {timeout}s")


# --------------------------------------------------------------------------------------------------- moto S3


class _ChildServer:
    """A server in a child process on a fixed loopback port: ``kill()`` is SIGKILL, ``start()`` again reuses
    the port. The child ends by itself when the test run that started it is gone (``--parent``)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[Any] | None = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class MotoServer(_ChildServer):
    """moto's S3 server as a child process (``tests/strict_moto.py``: moto, refusing a body cut short of its
    Content-Length as real S3 does); ``kill()`` is SIGKILL, ``start()`` reuses the port.

    moto keeps its state in memory, so a restarted server is empty (buckets must be recreated).
    """

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        env = {**os.environ, **CREDS}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("strict_moto.py")),
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--parent",
                str(os.getpid()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for_port(self.port)
        return self

    def storage_options(self) -> dict[str, Any]:
        return {
            "key": CREDS["AWS_ACCESS_KEY_ID"],
            "secret": CREDS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )


@dataclass
class Bucket:
    """A fresh bucket on a moto server, with what a test needs to reach it."""

    server: MotoServer
    bucket: str
    client: Any
    storage_options: dict[str, Any]

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def keys(self, prefix: str = "") -> list[str]:
        """Keys visible now (listed with boto3, independently of pass_wds.storage)."""
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def open_uploads(self) -> list[str]:
        resp = self.client.list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in resp.get("Uploads", [])]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.kill()


@pytest.fixture
def moto_factory() -> Iterator[Any]:
    """Start private moto servers (for tests that kill them); all are killed at teardown."""
    started: list[MotoServer] = []

    def make(port: int | None = None) -> MotoServer:
        server = MotoServer(port).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test credentials in the environment, and no user AWS config that could leak in."""
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)


def make_bucket(server: MotoServer, name: str | None = None) -> Bucket:
    name = name or f"test-{uuid.uuid4().hex[:12]}"
    client = server.client()
    client.create_bucket(Bucket=name)
    return Bucket(server, name, client, server.storage_options())


@pytest.fixture
def s3(moto_server: MotoServer, aws_env: None) -> Bucket:
    """A fresh, empty bucket for this test."""
    return make_bucket(moto_server)


# ---------------------------------------------------------------------------------------- HTTP (with Range)

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()

    @classmethod
    def serve(cls, port: int, handler: type[BaseHTTPRequestHandler], owner: Any) -> _Server:
        """Listen on 127.0.0.1:``port`` (0: any free port) in a daemon thread; handlers reach ``owner``."""
        httpd = cls(("127.0.0.1", port), handler)
        httpd.owner = owner  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.active_lock:
            self.active.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.active_lock:
                self.active.discard(request)

    def close_all(self) -> None:
        """Stop listening and cut every open (keep-alive) connection, like a crashed server."""
        self.shutdown()
        self.server_close()
        with self.active_lock:
            for conn in list(self.active):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-response (the fault tests do that on purpose) are not errors."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files under ``server.root`` with single-range ``Range`` support, ETag and Last-Modified."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        owner: HttpServer = self.server.owner
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        owner.record(self.command, rel, self.headers.get("Range"))
        target = (owner.root / rel).resolve()
        if (
            owner.root.resolve() not in target.parents
            and target != owner.root.resolve()
            or not target.is_file()
        ):
            self._simple(404, b"not found")
            return
        if rel in owner.forbidden:
            self._simple(403, b"forbidden")
            return
        size = target.stat().st_size
        stat = target.stat()
        etag = '"' + hashlib.md5(f"{rel}:{stat.st_mtime_ns}:{size}".encode()).hexdigest() + '"'
        start, end = 0, size  # [start, end)
        status = 200
        rng = self.headers.get("Range")
        if rng and not owner.ignore_ranges:
            m = _RANGE_RE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._simple(416, b"bad range", {"Content-Range": f"bytes */{size}"})
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            else:
                start, end = max(0, size - int(m.group(2))), size
            if start >= size or start >= end:
                self._simple(416, b"range not satisfiable", {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        with open(target, "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(left, owner.chunk_bytes))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                if owner.chunk_delay:
                    time.sleep(owner.chunk_delay)

    def _simple(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@dataclass
class HttpServer:
    """A threaded static file server over ``root`` that honours Range requests and counts requests."""

    root: Path
    port: int = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)
    ignore_ranges: bool = False  # behave like a server without Range support (always 200, whole body)
    chunk_delay: float = 0.0  # seconds to sleep per chunk sent (a slow server)
    chunk_bytes: int = 256 * 1024  # bytes written per chunk (small chunks + a delay: a trickling stream)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, method: str, path: str, rng: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, rng))

    def gets(self, path: str) -> list[str | None]:
        """Range headers of the GET requests for ``path`` so far."""
        with self._lock:
            return [r for m, p, r in self.requests if m == "GET" and p == path]

    def start(self) -> HttpServer:
        self._httpd = _Server.serve(self.port, RangeHandler, self)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root = tmp_path / "www"
    root.mkdir()
    server = HttpServer(root).start()
    yield server
    server.stop()


# ------------------------------------------------------------------------------------------- fault proxy

_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(n))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _proxy(self) -> None:
        proxy: FaultProxy = self.server.owner
        body = self._read_body()
        action = proxy.next_action(self.command, self.path, self.headers.get("Range"))
        if action.status is not None:
            payload = _SLOWDOWN if action.status == 503 else b"injected failure"
            self.send_response(action.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":  # a body after a HEAD answer would corrupt the kept-alive connection
                self.wfile.write(payload)
            return
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")
        }
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if action.drop_after is not None and action.drop_after < len(data):
                self.wfile.write(data[: action.drop_after])
                self.wfile.flush()
                if action.stall:
                    time.sleep(action.stall)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)
        finally:
            conn.close()


@dataclass
class Action:
    status: int | None = None
    drop_after: int | None = None
    stall: float = 0.0


@dataclass
class FaultProxy:
    """An HTTP reverse proxy in front of ``upstream`` that injects faults into matching GET/any requests.

    ``fail_first(k, status)`` answers the first ``k`` requests with ``status`` (503 carries an S3 SlowDown
    body); ``drop_after(n, times)`` sends only ``n`` body bytes of the next ``times`` GET responses and then
    closes the connection (optionally stalling first). ``requests`` records (method, path, Range header).
    """

    upstream: str
    port: int = 0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    _fail: list[int] = field(default_factory=list)
    _drops: list[tuple[int, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstream_host(self) -> str:
        return urllib.parse.urlsplit(self.upstream).hostname or "127.0.0.1"

    @property
    def upstream_port(self) -> int:
        return urllib.parse.urlsplit(self.upstream).port or 80

    def fail_first(self, k: int, status: int = 503) -> None:
        with self._lock:
            self._fail = [status] * k

    def drop_after(self, nbytes: int, times: int = 1, stall: float = 0.0) -> None:
        with self._lock:
            self._drops = [(nbytes, stall)] * times

    def next_action(self, method: str, path: str, rng: str | None) -> Action:
        with self._lock:
            self.requests.append((method, path, rng))
            if self._fail:
                return Action(status=self._fail.pop(0))
            if method == "GET" and self._drops:
                n, stall = self._drops.pop(0)
                return Action(drop_after=n, stall=stall)
            return Action()

    def gets(self) -> list[tuple[str, str | None]]:
        with self._lock:
            return [(p, r) for m, p, r in self.requests if m == "GET"]

    def start(self) -> FaultProxy:
        self._httpd = _Server.serve(self.port, ProxyHandler, self)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections (new ones are refused); ``start()`` again reuses the port."""
        if self._httpd is not None:
            self._httpd.close_all()
            self._httpd = None


def _factory(start: Any, stop: Any) -> Iterator[Any]:
    """A fixture's factory: ``make(upstream)`` starts one; every one started is stopped at teardown."""
    started: list[Any] = []

    def make(upstream: str) -> Any:
        server = start(upstream)
        started.append(server)
        return server

    yield make
    for server in started:
        stop(server)


@pytest.fixture
def fault_proxy() -> Iterator[Any]:
    yield from _factory(lambda upstream: FaultProxy(upstream).start(), FaultProxy.stop)


# ------------------------------------------------------------------------------------ TCP relay (a process)


class TcpRelay(_ChildServer):
    """A TCP forwarder to ``upstream`` (``http://host:port``) in a child process: ``kill()`` makes the endpoint
    refuse every connection (and cuts the open ones), ``start()`` brings it back on the same port.

    A process, not threads: DataLoader workers forked from the test process would inherit an in-process
    server's listening socket and keep the port open (connections accepted, never answered) after it stops.
    """

    def __init__(self, upstream: str, port: int | None = None) -> None:
        super().__init__(port)
        self.upstream = upstream

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpRelay:
        parts = urllib.parse.urlsplit(self.upstream)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "relay",
                str(self.port),
                parts.hostname or "127.0.0.1",
                str(parts.port),
                str(os.getpid()),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"relay on port {self.port} did not start")
        return self


@pytest.fixture
def tcp_relay() -> Iterator[Any]:
    """Factory: ``tcp_relay(upstream_url)`` → a started :class:`TcpRelay`; all are killed at teardown."""
    yield from _factory(lambda upstream: TcpRelay(upstream).start(), TcpRelay.kill)


def _relay_main(port: int, host: str, upstream_port: int) -> None:
    import asyncio

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
        print("READY", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "relay":
    from pass_wds.lifeline import die_with_parent

    die_with_parent(int(sys.argv[5]))  # a killed pytest must not leave a relay behind
    _relay_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
