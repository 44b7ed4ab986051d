"""Resumable ranged reads: transient failures are retried with bounded, jittered backoff and a broken stream
resumes at the byte offset reached, so callers never see a byte twice or miss one."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from fsspec.asyn import AsyncFileSystem, sync

from pass_wds.storage.errors import (
    StorageError,
    StoragePermissionError,
    _chain,
    _client_error_code,
    _first_line,
    _guard,
    get_logger,
    redact,
    translate_error,
)
from pass_wds.storage.urls import HTTP as _HTTP
from pass_wds.storage.urls import get_fs, is_local
from pass_wds.storage.urls import protocol as _protocol

log = get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`open_stream` treats transient failures.

    ``attempts`` bounds consecutive failures without progress (a stream that keeps making progress keeps
    going); delays grow as ``base_delay * 2**n`` capped at ``max_delay`` with full jitter; a read that
    produces no byte for ``read_timeout`` seconds counts as a broken connection.
    """

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = 1 << 20

    def delay(self, failure: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (failure - 1)))


class _Transient(Exception):
    """A failure worth retrying (5xx, throttling, short body)."""


_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "500",
    "502",
    "503",
    "504",
}
_TRANSIENT_NAMES = {
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ServerTimeoutError",
    "ClientConnectionError",
    "ClientConnectorError",
    "ConnectionClosedError",
    "EndpointConnectionError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "IncompleteRead",
    "FSTimeoutError",
    "HTTPClientError",
    "ProtocolError",
}


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help (connection trouble, timeouts, 5xx, throttling, truncated bodies)."""
    if isinstance(exc, StorageError | FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    for e in _chain(exc):
        if isinstance(e, _Transient | TimeoutError | asyncio.TimeoutError | ConnectionError):
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        code, status = _client_error_code(e)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return True
        if isinstance(e, OSError) and e.errno in (
            errno.EBUSY,
            errno.EREMOTEIO,
            errno.ETIMEDOUT,
            errno.EAGAIN,
        ):
            return True
    return False


def _is_unreachable(exc: BaseException) -> bool:
    return any(
        isinstance(e, ConnectionRefusedError)
        or type(e).__name__ in ("EndpointConnectionError", "ClientConnectorError", "gaierror")
        for e in _chain(exc)
    )


class _Response:
    """One ranged GET in flight: reads its body chunk by chunk on the filesystem's event loop."""

    def __init__(
        self, body: Any, total: int | None, tag: str | None, skip: int = 0, closer: Any = None
    ) -> None:
        self.body, self.total, self.tag, self.skip = body, total, tag, skip
        self.closer = closer or getattr(body, "close", None)
        self.error: BaseException | None = None

    async def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; ``timeout`` bounds each wait for the next bytes, not the whole read, so a slow
        but live stream keeps progressing and only one that sends nothing for ``timeout`` seconds fails."""
        while self.skip:  # a server that ignored Range: discard up to the offset we need
            data = await asyncio.wait_for(self.body.read(min(self.skip, 1 << 20)), timeout)
            if not data:
                return b""
            self.skip -= len(data)
        if self.error is not None:
            raise self.error
        # gather up to n bytes in one call: each call is a round trip to the event-loop thread, and the
        # stream hands out whatever its buffer holds (often 64 KiB). A failure after some bytes arrived
        # returns those bytes first and is raised on the next call, so the stream resumes after them.
        parts: list[bytes] = []
        got = 0
        while got < n:
            try:
                data = await asyncio.wait_for(self.body.read(n - got), timeout)
            except Exception as exc:
                if not got:
                    raise
                self.error = exc
                break
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self) -> None:
        if self.closer is not None:
            with contextlib.suppress(Exception):
                self.closer()


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


async def _open_http(fs: Any, url: str, pos: int, end: int | None) -> _Response:
    session = await fs.set_session()
    kw = dict(fs.kwargs)
    headers = dict(kw.pop("headers", None) or {})
    headers["Range"] = f"bytes={pos}-{'' if end is None else end - 1}"
    r = await session.get(fs.encode_url(url), headers=headers, **kw)
    status = r.status
    if status in (200, 206):
        tag = r.headers.get("ETag") or r.headers.get("Last-Modified")
        if status == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != pos:
                r.close()
                raise StorageError(f"server answered a range request for byte {pos} with the wrong range")
            total = int(m.group(3)) if m.group(3) != "*" else None
            return _Response(r.content, total, tag, closer=r.close)
        length = r.headers.get("Content-Length")
        return _Response(r.content, int(length) if length else None, tag, skip=pos, closer=r.close)
    r.close()
    if status == 416:
        m = re.match(r"bytes \*/(\d+)", r.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == pos:
            return _Response(_Empty(), pos, None)
        raise StorageError(f"range starting at byte {pos} is beyond the end of {redact(url)}")
    if status == 404:
        raise FileNotFoundError(url)
    if status in (401, 403):
        raise StoragePermissionError(f"permission denied to read {redact(url)} (HTTP {status})")
    if status >= 500 or status in (408, 429):
        raise _Transient(f"HTTP {status}")
    raise StorageError(f"cannot read {redact(url)}: HTTP {status}")


class _Empty:
    async def read(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


async def _open_s3(fs: Any, path: str, pos: int, end: int | None, tag: str | None) -> _Response:
    from s3fs.core import version_id_kw

    bucket, key, version = fs.split_path(path)
    kw: dict[str, Any] = {"Range": f"bytes={pos}-{'' if end is None else end - 1}"}
    if tag:
        kw["IfMatch"] = tag
    try:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, **version_id_kw(version), **kw)
    except Exception as exc:
        codes = [_client_error_code(e) for e in _chain(exc)]
        if any(c == "InvalidRange" or s == 416 for c, s in codes) or "range is not satisfiable" in str(exc):
            if pos == 0:  # an empty object has no byte 0
                return _Response(_Empty(), 0, tag)
            raise StorageError(f"range starting at byte {pos} is beyond the end of s3://{path}") from None
        if any(c == "PreconditionFailed" or s == 412 for c, s in codes) or "PreconditionFailed" in str(exc):
            raise StorageError(f"s3://{path} changed while it was being read") from None
        raise
    m = _CONTENT_RANGE.match(resp.get("ContentRange") or "")
    total = int(m.group(3)) if m and m.group(3) != "*" else pos + int(resp.get("ContentLength") or 0)
    return _Response(resp["Body"], total, resp.get("ETag"))


class _ResumableReader(io.RawIOBase):
    """Sequential reader of ``[start, end)`` that reopens at the offset reached after a transient failure."""

    def __init__(
        self,
        fs: Any,
        path: str,
        url: str,
        start: int,
        end: int | None,
        policy: RetryPolicy,
        storage_options: Mapping[str, Any] | None,
    ) -> None:
        super().__init__()
        self._fs, self._path, self._url = fs, path, url
        self._pos, self._end, self._start = start, end, start
        self._policy = policy
        self._so = storage_options
        self._resp: _Response | None = None
        self._sync_file: Any = None
        self._tag: str | None = None
        self._total: int | None = None
        self._rng = random.Random()
        self.retries = 0
        self._proto = _protocol(url)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _run(self, coro: Any) -> Any:
        return sync(self._fs.loop, asyncio.wait_for, coro, self._policy.read_timeout)

    def _open(self) -> None:
        if self._proto in _HTTP:
            resp = self._run(_open_http(self._fs, self._path, self._pos, self._end))
        elif self._proto in ("s3", "s3a"):
            resp = self._run(_open_s3(self._fs, self._path, self._pos, self._end, self._tag))
        else:  # any other fsspec store: its own (seekable) file object, reopened at the offset on failure
            f = self._fs.open(self._path, "rb", block_size=self._policy.chunk_size)
            f.seek(self._pos)
            self._sync_file = f
            if self._total is None:
                self._total = int(f.size)
                self._check_end()
            return
        if self._tag is not None and resp.tag is not None and resp.tag != self._tag:
            resp.close()
            raise StorageError(f"{redact(self._url)} changed while it was being read")
        if self._total is not None and resp.total is not None and resp.total != self._total:
            resp.close()
            raise StorageError(f"{redact(self._url)} changed size while it was being read")
        self._tag = self._tag or resp.tag
        if self._total is None and resp.total is not None:
            self._total = resp.total
            self._check_end()
        self._resp = resp

    def _check_end(self) -> None:
        assert self._total is not None
        if self._end is None:
            self._end = self._total
        elif self._end > self._total:
            raise StorageError(
                f"requested bytes up to {self._end} of {redact(self._url)}, which has only {self._total}"
            )

    def _read_some(self, n: int) -> bytes:
        if self._sync_file is not None:
            return bytes(self._sync_file.read(n))
        assert self._resp is not None
        return bytes(sync(self._fs.loop, self._resp.read, n, self._policy.read_timeout))

    def _drop(self) -> None:
        if self._resp is not None:
            resp, self._resp = self._resp, None
            with contextlib.suppress(Exception):
                sync(self._fs.loop, _close_async, resp)
        if self._sync_file is not None:
            with contextlib.suppress(Exception):
                self._sync_file.close()
            self._sync_file = None

    def readinto(self, b: Any) -> int:
        if self._end is not None and self._pos >= self._end or not len(b):
            return 0
        failures = 0
        while True:
            try:
                if self._resp is None and self._sync_file is None:
                    self._open()
                    if self._end is not None and self._pos >= self._end:
                        return 0
                want = len(b) if self._end is None else min(len(b), self._end - self._pos)
                data = self._read_some(want)
                if not data:
                    if self._end is None or self._pos >= self._end:
                        return 0  # size unknown to the server: its EOF is the end
                    raise _Transient(f"connection ended at byte {self._pos} of {self._end}")
                n = min(len(data), want)
                b[:n] = data[:n]
                self._pos += n
                return n
            except Exception as exc:
                self._drop()
                if not is_transient(exc) or (self._pos == self._start and _is_unreachable(exc)):
                    # an endpoint that refuses the very first request is a configuration error: fail fast
                    translated = translate_error(exc, self._url, self._so, "read")
                    if translated is exc:
                        raise
                    raise translated from None
                failures += 1
                self.retries += 1
                reason = redact(_first_line(exc), self._so) or type(exc).__name__
                if failures >= self._policy.attempts:
                    raise StorageError(
                        f"giving up reading {redact(self._url, self._so)} at byte {self._pos} after "
                        f"{failures} failed tries ({type(exc).__name__}: {reason})"
                    ) from None
                wait = self._policy.delay(failures, self._rng)
                log.warning(
                    "retrying %s at byte %d in %.2fs after %s: %s",
                    redact(self._url, self._so),
                    self._pos,
                    wait,
                    type(exc).__name__,
                    reason,
                )
                time.sleep(wait)

    def close(self) -> None:
        if not self.closed:
            self._drop()
        super().close()


async def _close_async(resp: _Response) -> None:
    resp.close()


class _BoundedRaw(io.RawIOBase):
    """A local file limited to ``[start, end)``."""

    def __init__(self, f: IO[bytes], start: int, end: int) -> None:
        super().__init__()
        self._f, self._pos, self._end = f, start, end
        f.seek(start)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        want = min(len(b), self._end - self._pos)
        if want <= 0:
            return 0
        data = self._f.read(want)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


def open_stream(
    url: str,
    start: int = 0,
    end: int | None = None,
    storage_options: dict[str, Any] | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> IO[bytes]:
    """Open ``url`` for sequential reading of bytes ``[start, end)`` (``end=None``: to the end).

    Local files are plain file reads. Remote objects are read with one streaming ranged GET, reusing the
    filesystem's session; a transient failure (reset, timeout, 5xx, throttling, short body) is retried with
    backoff and the stream resumes at the byte offset reached, so the caller sees every byte exactly once.
    The total length is checked; an object that changes while being read is an error.
    """
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end})")
    policy = retry or RetryPolicy()
    if is_local(url):
        with _guard(url, storage_options, "read"):
            fs, path = get_fs(url, storage_options)
            f = open(path, "rb")  # noqa: SIM115 (returned to the caller)
        if end is None:
            f.seek(start)
            return f
        return io.BufferedReader(_BoundedRaw(f, start, end), buffer_size=min(policy.chunk_size, 1 << 16))
    with _guard(url, storage_options, "open"):
        fs, path = get_fs(url, storage_options)
    if _protocol(url) in _HTTP | {"s3", "s3a"} and not isinstance(fs, AsyncFileSystem):
        raise StorageError(f"unexpected filesystem for {redact(url)}")
    raw = _ResumableReader(fs, path, url, start, end, policy, storage_options)
    return io.BufferedReader(raw, buffer_size=policy.chunk_size)


class RangeReader:
    """Positional reads of byte ranges from one object, for the shard writer's random access into archives.

    Local files: ``os.pread`` on one descriptor (thread-safe), with :meth:`advise` asking the kernel to read
    ahead. Remote objects: one ranged GET per read through the cached fsspec filesystem, retried with the same
    backoff as :func:`open_stream`; errors become redacted one-line :class:`StorageError`\\s.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
    ) -> None:
        self.url = url
        self._so = storage_options
        self._policy = retry or RetryPolicy()
        self._fd: int | None = None
        with _guard(url, storage_options, "open"):
            if is_local(url):
                self._fd = os.open(url.removeprefix("file://"), os.O_RDONLY)
            else:
                self._fs, self._path = get_fs(url, storage_options)

    def advise(self, offset: int, size: int) -> None:
        """Hint that ``[offset, offset + size)`` will be read soon (local files; a no-op elsewhere)."""
        if self._fd is not None:
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(self._fd, offset, size, os.POSIX_FADV_WILLNEED)

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``; a short read (truncated archive) is an ``OSError``."""
        if size == 0:  # a range request for 0 bytes would return the whole object
            return b""
        if self._fd is not None:
            with _guard(self.url, self._so, "read"):
                data = os.pread(self._fd, size, offset)
        else:
            data = self._read_remote(offset, size)
        if len(data) != size:
            raise OSError(
                f"short read in {redact(self.url, self._so)} at {offset}: {len(data)} of {size} bytes; "
                "archive truncated?"
            )
        return data

    def _read_remote(self, offset: int, size: int) -> bytes:
        rng = random.Random()
        failures = 0
        while True:
            try:
                data = bytes(self._fs.cat_file(self._path, start=offset, end=offset + size))
            except Exception as exc:
                failures += 1
                if not is_transient(exc) or failures >= self._policy.attempts:
                    translated = translate_error(exc, self.url, self._so, "read")
                    if translated is exc:
                        raise
                    raise translated from None
                time.sleep(self._policy.delay(failures, rng))
                continue
            if len(data) > size:
                # a server that ignores Range sends the whole object for every image: reading a 20 GB archive
                # once per image is not a fallback, it is a hang; one line says what to do instead
                raise StorageError(
                    f"{redact(self.url, self._so)}: the server ignores HTTP Range requests (sent {len(data)} "
                    f"bytes for a {size}-byte range); images inside an archive are read by byte range: "
                    "download the archive and convert the local copy"
                )
            return data

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
