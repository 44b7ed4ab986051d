"""Resumable ranged reads: a broken stream resumes at the byte offset reached, so callers never see a byte twice
or miss one, and every failed try goes through the one retry policy (:mod:`pass_wds.storage.retry`)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
from collections.abc import Mapping
from typing import IO, Any

from fsspec.asyn import AsyncFileSystem, sync

from pass_wds.storage.errors import (
    HttpStatusError,
    ShortBodyError,
    StorageError,
    client_error_code,
    error_chain,
    guard,
    redact,
)
from pass_wds.storage.retry import Attempts, RetryPolicy, call, run_bounded
from pass_wds.storage.urls import HTTP as _HTTP
from pass_wds.storage.urls import get_fs, is_local, read_fs
from pass_wds.storage.urls import protocol as _protocol


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
    raise HttpStatusError(status)


async def http_stat(fs: Any, url: str) -> int | None:
    """The size of an HTTP(S) object, or None when the server says it does not exist (404, 410).

    A ``HEAD`` first; where that is refused (a presigned URL is often signed for GET only: 403, or 405/501 from
    a server without HEAD) or says no length, one ``GET`` of the first byte. Every answer is classified like
    any other: 401/403 and other 4xx are permanent errors, 5xx/408/429 transient. fsspec's own
    ``exists``/``info`` call every failure "not found", which is how a 503 used to read as a missing
    ``index.json``.
    """
    session = await fs.set_session()
    kw = dict(fs.kwargs)
    headers = dict(kw.pop("headers", None) or {})
    r = await session.head(fs.encode_url(url), headers=headers, allow_redirects=True, **kw)
    try:
        length = r.headers.get("Content-Length", "")
        if r.status == 200 and length.isdigit() and "gzip" not in r.headers.get("Content-Encoding", ""):
            return int(length)
        if r.status in (404, 410):
            return None
        if r.status >= 500 or r.status in (408, 429):
            raise HttpStatusError(r.status)
    finally:
        r.close()
    headers["Range"] = "bytes=0-0"
    r = await session.get(fs.encode_url(url), headers=headers, **kw)
    try:
        status = r.status
        if status == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if m and m.group(3) != "*":
                return int(m.group(3))
        if status == 416:  # an empty object has no byte 0
            m = re.match(r"bytes \*/(\d+)", r.headers.get("Content-Range", ""))
            return int(m.group(1)) if m else 0
        if status in (200, 206):
            length = r.headers.get("Content-Length", "")
            if status == 200 and length.isdigit():
                return int(length)
            raise StorageError(f"{redact(url)}: the server did not say how large the object is")
        if status in (404, 410):
            return None
        raise HttpStatusError(status)
    finally:
        r.close()


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
        codes = [client_error_code(e) for e in error_chain(exc)]
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
    """Reader of ``[start, end)`` that reopens at the offset reached after a transient failure; seekable (a
    seek drops the response in flight and the next read opens a new range there)."""

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
        self._attempts = Attempts(policy, url, storage_options, "read")
        self._proto = _protocol(url)

    @property
    def retries(self) -> int:
        return self._attempts.retries

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self._end is None:
                self._connect()
            assert self._end is not None
            offset += self._end
        if offset < self._start:
            raise ValueError(f"cannot seek to {offset}, before the start of the range ({self._start})")
        if offset != self._pos:
            self._drop()
            self._pos = offset
        return self._pos

    def _run(self, coro: Any) -> Any:
        return run_bounded(self._fs, coro, self._policy.read_timeout)

    def _connect(self) -> None:
        """Open a response at the current offset, under the retry policy."""
        while True:
            self._attempts.start()
            try:
                self._open()
                self._attempts.progressed()
                return
            except Exception as exc:
                self._drop()
                self._attempts.failed(exc, position=self._pos)

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
        while True:
            self._attempts.start()
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
                    raise ShortBodyError(f"connection ended at byte {self._pos} of {self._end}")
                n = min(len(data), want)
                b[:n] = data[:n]
                self._pos += n
                self._attempts.progressed()
                return n
            except Exception as exc:
                self._drop()
                self._attempts.failed(exc, position=self._pos)

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
    filesystem's session; a transient failure (refused, reset, timeout, 5xx, throttling, short body) is retried
    under ``retry`` (the default :class:`RetryPolicy`) and the stream resumes at the byte offset reached, so the
    caller sees every byte exactly once. The total length is checked; an object that changes while being read
    is an error. Remote streams are seekable too (a seek opens a new range on the next read).
    """
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end})")
    policy = retry or RetryPolicy()
    if is_local(url):
        with guard(url, storage_options, "read"):
            fs, path = get_fs(url, storage_options)
            f = open(path, "rb")  # noqa: SIM115 (returned to the caller)
        if end is None:
            f.seek(start)
            return f
        return io.BufferedReader(_BoundedRaw(f, start, end), buffer_size=min(policy.chunk_size, 1 << 16))
    with guard(url, storage_options, "open"):
        fs, path = read_fs(url, storage_options)
    if _protocol(url) in _HTTP | {"s3", "s3a"} and not isinstance(fs, AsyncFileSystem):
        raise StorageError(f"unexpected filesystem for {redact(url)}")
    raw = _ResumableReader(fs, path, url, start, end, policy, storage_options)
    return io.BufferedReader(raw, buffer_size=policy.chunk_size)


class RangeReader:
    """Positional reads of byte ranges from one object, for the shard writer's random access into archives.

    Local files: ``os.pread`` on one descriptor (thread-safe), with :meth:`advise` asking the kernel to read
    ahead. Remote objects: one ranged GET per read through the cached fsspec filesystem, under the same retry
    policy as :func:`open_stream`; errors become redacted one-line :class:`StorageError`\\s.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
    ) -> None:
        self.url = url
        self._so = storage_options
        self._policy = retry or RetryPolicy()
        self._fd: int | None = None
        with guard(url, storage_options, "open"):
            if is_local(url):
                self._fd = os.open(url.removeprefix("file://"), os.O_RDONLY)
            else:
                self._fs, self._path = read_fs(url, storage_options)

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
            with guard(self.url, self._so, "read"):
                data = os.pread(self._fd, size, offset)
        else:
            data = call(lambda: self._cat(offset, size), self.url, self._so, "read", self._policy)
        if len(data) > size:
            # a server that ignores Range sends the whole object for every image: reading a 20 GB archive
            # once per image is not a fallback, it is a hang; one line says what to do instead
            raise StorageError(
                f"{redact(self.url, self._so)}: the server ignores HTTP Range requests (sent {len(data)} "
                f"bytes for a {size}-byte range); images inside an archive are read by byte range: "
                "download the archive and convert the local copy"
            )
        if len(data) != size:
            raise OSError(
                f"short read in {redact(self.url, self._so)} at {offset}: {len(data)} of {size} bytes; "
                "archive truncated?"
            )
        return data

    def _cat(self, offset: int, size: int) -> bytes:
        if isinstance(self._fs, AsyncFileSystem):
            coro = self._fs._cat_file(self._path, start=offset, end=offset + size)
            return bytes(run_bounded(self._fs, coro, self._policy.read_timeout))
        return bytes(self._fs.cat_file(self._path, start=offset, end=offset + size))

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
