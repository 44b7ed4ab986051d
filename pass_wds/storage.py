"""The single storage layer: every byte pass-wds reads or writes goes through fsspec here.

Local paths, ``file://``, ``s3://`` (s3fs; standard AWS configuration and ``AWS_ENDPOINT_URL`` work) and
``http(s)://`` (read-only) all work the same way. Filesystem instances are cached by fsspec per
``storage_options``, so sessions and connection pools are reused across shards.

* Writes are atomic: a reader never sees a partial object under a final name (local: temp name +
  ``os.replace``; object stores: the upload is discarded — multipart aborted — when the writer fails).
* Reads through :func:`open_stream` retry transient failures with bounded, jittered exponential backoff and
  resume a broken stream at the byte offset reached with a range request, so callers never see a byte twice
  or miss one.
* Errors a user can fix (wrong endpoint, missing bucket, permission denied, missing object) become one-line
  :class:`StorageError` subclasses; credentials and signed-URL parameters are removed from every message by
  :func:`redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import posixpath
import random
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import fsspec
from fsspec.asyn import AsyncFileSystem, sync
from fsspec.core import url_to_fs

if TYPE_CHECKING:
    from pass_wds.cache import ShardCache

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}
_HTTP = {"http", "https"}
# stores whose writers upload on close and can abandon an unfinished upload (discard): nothing is visible
# under the final name before a successful close
_DISCARDING = {"s3", "s3a", "gs", "gcs"}


# ------------------------------------------------------------------------------------------------- errors


class StorageError(RuntimeError):
    """A storage location cannot be used (missing, unreadable, not writable); the message is one line."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, folder or bucket does not exist (also a ``FileNotFoundError``)."""


class StoragePermissionError(StorageError, PermissionError):
    """Credentials are missing or do not allow the operation (also a ``PermissionError``)."""


class StorageConnectionError(StorageError, ConnectionError):
    """The endpoint cannot be reached (wrong endpoint URL, server down, DNS failure)."""


class ReadOnlyError(StorageError):
    """The location cannot be written (``http(s)://``)."""


_SECRET_PARAM = re.compile(
    r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|credential|awsaccesskeyid|"
    r"access_token|id_token|token|api[_-]?key|secret|password|policy|key-pair-id)=([^&\s,'\"<>]+)"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_OPTION = re.compile(r"(?i)(secret|token|password|passwd|credential|^key$|access_key|api_key|sas)")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECURITY_TOKEN")


def _secret_values(storage_options: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []

    def walk(obj: Any, secret: bool) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, secret or bool(_SECRET_OPTION.search(str(k))))
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v, secret)
        elif secret and isinstance(obj, str) and len(obj) >= 4:
            out.append(obj)

    walk(storage_options or {}, False)
    out += [v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]
    return sorted(set(out), key=len, reverse=True)


def redact(text: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Remove credentials from a URL or message: userinfo, signed-URL query parameters, and secret values
    from ``storage_options`` and the AWS environment."""
    text = _USERINFO.sub(r"\1***@", str(text))
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)
    for value in _secret_values(storage_options):
        text = text.replace(value, "***")
    return text


def redact_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``storage_options`` safe to log or store in a manifest (secret values become ``***``)."""

    def walk(obj: Any, secret: bool) -> Any:
        if isinstance(obj, Mapping):
            return {k: walk(v, secret or bool(_SECRET_OPTION.search(str(k)))) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [walk(v, secret) for v in obj]
        if secret and obj is not None:
            return "***"
        return redact(obj) if isinstance(obj, str) else obj

    return dict(walk(storage_options or {}, False))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _client_error_code(exc: BaseException) -> tuple[str, int]:
    resp = getattr(exc, "response", None)
    if isinstance(resp, Mapping):
        code = str(resp.get("Error", {}).get("Code", ""))
        status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code, status
    return "", 0


def _endpoint(url: str, storage_options: Mapping[str, Any] | None) -> str:
    so = storage_options or {}
    ep = (so.get("client_kwargs") or {}).get("endpoint_url") or so.get("endpoint_url")
    if _protocol(url) in ("s3", "s3a"):
        ep = ep or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    elif not ep:
        ep = url.split("/", 3)[2] if "://" in url else url
    return redact(str(ep))


def _bucket(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""


def translate_error(
    exc: BaseException, url: str, storage_options: Mapping[str, Any] | None = None, action: str = "access"
) -> BaseException:
    """Map a backend exception to a one-line :class:`StorageError` (credentials redacted).

    Exceptions that are not about storage (programming errors) are returned unchanged.
    """
    if isinstance(exc, StorageError):
        return exc
    where = redact(url, storage_options)
    proto = _protocol(url)
    for e in _chain(exc):
        code, status = _client_error_code(e)
        name = type(e).__name__
        text = str(e)
        if code == "NoSuchBucket" or "specified bucket does not exist" in text:
            return StorageNotFoundError(f"bucket {_bucket(url)!r} does not exist ({where})")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403") or (
            status in (401, 403)
        ):
            return StoragePermissionError(
                f"permission denied to {action} {where} ({code or status}); check credentials"
            )
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return StoragePermissionError(
                f"no credentials to {action} {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
                "or pass key/secret in --storage-options"
            )
        if name in ("EndpointConnectionError", "ClientConnectorError", "ConnectTimeoutError") or isinstance(
            e, ConnectionRefusedError
        ):
            return StorageConnectionError(
                f"cannot connect to {_endpoint(url, storage_options)} to {action} {where}; "
                "check the endpoint URL (AWS_ENDPOINT_URL or --storage-options client_kwargs.endpoint_url)"
            )
        if name == "ClientResponseError" and getattr(e, "status", 0) in (401, 403):
            return StoragePermissionError(f"permission denied to {action} {where} (HTTP {e.status})")  # type: ignore[attr-defined]
        if name == "ClientResponseError" and getattr(e, "status", 0) == 404 or code in ("NoSuchKey", "404"):
            return StorageNotFoundError(f"not found: {where}")
    if isinstance(exc, FileNotFoundError):
        return StorageNotFoundError(f"not found: {where}")
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"permission denied to {action} {where}")
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in (
        "botocore",
        "aiohttp",
        "aiobotocore",
    ):
        detail = redact(_first_line(exc), storage_options)
        if proto in _HTTP and not detail:
            detail = type(exc).__name__
        return StorageError(f"cannot {action} {where}: {detail}")
    return exc


@contextlib.contextmanager
def _guard(url: str, storage_options: Mapping[str, Any] | None, action: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate_error(exc, url, storage_options, action)
        if translated is exc:
            raise
        raise translated from None


# ---------------------------------------------------------------------------------------------- basics


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path (instances are cached by fsspec)."""
    fs, path = url_to_fs(url, **(storage_options or {}))
    return fs, path


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def is_object_store(url: str) -> bool:
    return _protocol(url) in _OBJECT_STORES


def join(base: str, *names: str) -> str:
    """Join path components onto a URL or local path without breaking the scheme."""
    if is_local(base) and not base.startswith("file://"):
        return os.path.join(base, *names)
    return posixpath.join(base.rstrip("/"), *names)


def _fresh(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Forget cached listings, so existence and sizes reflect the store now (resume decisions need it)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    with _guard(url, storage_options, "check"):
        fs, path = get_fs(url, storage_options)
        _fresh(fs, path)
        return bool(fs.exists(path))


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The whole object; remote reads go through :func:`open_stream` (retries, resume, length check)."""
    if is_local(url):
        with _guard(url, storage_options, "read"):
            fs, path = get_fs(url, storage_options)
            with open(path, "rb") as f:
                return f.read()
    with open_stream(url, storage_options=storage_options) as f:
        return f.read()


def read_text(url: str, storage_options: dict[str, Any] | None = None) -> str:
    return read_bytes(url, storage_options).decode("utf-8")


def open_read(url: str, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> IO[bytes]:
    """A seekable random-access file (fsspec's; remote reads fetch blocks by range)."""
    with _guard(url, storage_options, "open"):
        fs, path = get_fs(url, storage_options)
        return fs.open(path, "rb", **kwargs)  # type: ignore[no-any-return]


def _check_writable_proto(url: str) -> None:
    if _protocol(url) in _HTTP:
        raise ReadOnlyError(f"{redact(url)} is read-only: http(s) locations can be read but not written")


def makedirs(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Create a folder; on object stores only check that the bucket exists (never create a bucket)."""
    _check_writable_proto(url)
    with _guard(url, storage_options, "create"):
        fs, path = get_fs(url, storage_options)
        if is_object_store(url):
            _check_bucket(fs, url, storage_options)
            return
        fs.makedirs(path, exist_ok=True)


def _check_bucket(fs: fsspec.AbstractFileSystem, url: str, storage_options: Mapping[str, Any] | None) -> None:
    bucket = _bucket(url)
    if _protocol(url) in ("s3", "s3a"):
        try:
            fs.call_s3("head_bucket", Bucket=bucket)  # type: ignore[attr-defined]
        except Exception as exc:
            code, status = _client_error_code(exc)
            if isinstance(exc, FileNotFoundError) or code in ("404", "NoSuchBucket") or status == 404:
                raise StorageNotFoundError(
                    f"bucket {bucket!r} does not exist ({redact(url, storage_options)})"
                ) from None
            raise
    elif not fs.exists(bucket):
        raise StorageNotFoundError(f"bucket {bucket!r} does not exist ({redact(url, storage_options)})")


def check_writable(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fail fast with a one-line :class:`StorageError` when ``url`` cannot be written.

    Checks the endpoint, the bucket and write permission by writing and deleting a tiny probe object, so a
    long conversion never starts against a location it cannot finish in.
    """
    _check_writable_proto(url)
    makedirs(url, storage_options)
    probe = join(url, f".pass-wds-probe{TMP_MARK}{uuid.uuid4().hex[:12]}")
    write_bytes(probe, b"", storage_options)
    remove(probe, storage_options)


def remove(url: str, storage_options: dict[str, Any] | None = None, recursive: bool = False) -> None:
    _check_writable_proto(url)
    with _guard(url, storage_options, "remove"):
        fs, path = get_fs(url, storage_options)
        _fresh(fs, path)
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def listdir(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Base names of the entries directly under ``url`` (empty when it does not exist)."""
    with _guard(url, storage_options, "list"):
        fs, path = get_fs(url, storage_options)
        _fresh(fs, path)
        try:
            entries = fs.ls(path, detail=False)
        except FileNotFoundError:
            if is_object_store(url):
                _check_bucket(fs, url, storage_options)  # a missing bucket is an error, not an empty folder
            return []
        base = path.rstrip("/")
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries if str(e).rstrip("/") != base)


def file_size(url: str, storage_options: dict[str, Any] | None = None) -> int:
    with _guard(url, storage_options, "stat"):
        fs, path = get_fs(url, storage_options)
        _fresh(fs, path)
        return int(fs.size(path))


@contextlib.contextmanager
def atomic_write(
    url: str, storage_options: dict[str, Any] | None = None, block_size: int | None = None
) -> Iterator[IO[bytes]]:
    """Open ``url`` for binary writing so that it appears under its name only when complete.

    Local files are written to ``<name>.tmp-<random>`` in the same directory and renamed; a crash leaves only
    the temp file, which the next run removes. On object stores the upload is committed on close (single PUT or
    CompleteMultipartUpload) and discarded on any exception (the multipart upload is aborted), so no truncated
    object ever becomes visible; a killed writer leaves only an invisible incomplete upload, which
    :func:`remove_temp_files` aborts. Other fsspec stores (whose files may be visible while being written) get
    a temp name and a move. ``block_size`` sets the object-store part size (s3fs default 50 MiB).
    """
    _check_writable_proto(url)
    if is_local(url):
        fs, path = get_fs(url, storage_options)
        directory = os.path.dirname(path) or "."
        with _guard(url, storage_options, "write"):
            os.makedirs(directory, exist_ok=True)
        tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        return
    with _guard(url, storage_options, "write"):
        fs, path = get_fs(url, storage_options)
        kwargs = {"block_size": block_size} if block_size else {}
        if _protocol(url) not in _DISCARDING:
            # a store whose files may be visible while written (memory://, …): temp name, then move
            tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex[:12]}"
            f = fs.open(tmp, "wb", **kwargs)
    if _protocol(url) not in _DISCARDING:
        try:
            with f:
                yield f
            with _guard(url, storage_options, "write"):
                fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
            raise
        return
    with _guard(url, storage_options, "write"):
        f = fs.open(path, "wb", **kwargs)
    try:
        yield f
    except BaseException:
        _discard(f, fs, path)
        raise
    try:
        with _guard(url, storage_options, "write"):
            f.close()
    except BaseException:
        _discard(f, fs, path)
        raise


def _discard(f: Any, fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Abandon an unfinished upload without ever committing it."""
    discard = getattr(f, "discard", None)
    if discard is not None:
        with contextlib.suppress(Exception):
            discard()
        # fsspec's close() (also called from __del__) would flush and commit what is buffered: prevent it
        with contextlib.suppress(Exception):
            f.closed = True
        return
    with contextlib.suppress(Exception):  # a store without discard: never leave the partial object behind
        f.close()
    with contextlib.suppress(Exception):
        fs.rm(path)


def write_bytes(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    with atomic_write(url, storage_options) as f:
        f.write(data)


def remove_temp_files(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Delete leftovers of interrupted atomic writes directly under ``url``; return their names.

    On S3 this also aborts incomplete multipart uploads (invisible, but billed) of objects directly under
    ``url`` that were started before this call: call it before starting writers, not while they run.
    """
    removed = [n for n in listdir(url, storage_options) if TMP_MARK in n]
    for name in removed:
        remove(join(url, name), storage_options)
    if _protocol(url) in ("s3", "s3a"):
        removed += _abort_stale_uploads(url, storage_options)
    return removed


def _abort_stale_uploads(url: str, storage_options: dict[str, Any] | None) -> list[str]:
    import datetime

    started = datetime.datetime.now(datetime.timezone.utc)
    with _guard(url, storage_options, "list uploads in"):
        fs, path = get_fs(url, storage_options)
        bucket, _, prefix = path.partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        resp = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
        aborted = []
        for up in resp.get("Uploads", []):
            key = up["Key"]
            initiated = up.get("Initiated")
            if "/" in key[len(prefix) :] or (initiated is not None and initiated > started):
                continue
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up["UploadId"])  # type: ignore[attr-defined]
            aborted.append(f"{posixpath.basename(key)} (incomplete upload)")
        return aborted


# ------------------------------------------------------------------------------------ resumable streaming


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

    async def read(self, n: int) -> bytes:
        while self.skip:  # a server that ignored Range: discard up to the offset we need
            data = await self.body.read(min(self.skip, 1 << 20))
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
                data = await self.body.read(n - got)
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
        return bytes(self._run(self._resp.read(n)))

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
    cache: ShardCache | None = None,
) -> IO[bytes]:
    """Open ``url`` for sequential reading of bytes ``[start, end)`` (``end=None``: to the end).

    Local files are plain file reads. Remote objects are read with one streaming ranged GET, reusing the
    filesystem's session; a transient failure (reset, timeout, 5xx, throttling, short body) is retried with
    backoff and the stream resumes at the byte offset reached, so the caller sees every byte exactly once.
    The total length is checked; an object that changes while being read is an error. With ``cache``, the
    whole object is first fetched into the node-local :class:`~pass_wds.cache.ShardCache` and read from there.
    """
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end})")
    policy = retry or RetryPolicy()
    if cache is not None and not is_local(url):
        url = cache.get(url, storage_options)
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
