"""Filesystems (fsspec), reads and atomic writes. Every remote read (existence, size, listing, bytes) runs
under the one retry policy (:mod:`pass_wds.storage.retry`: transient failures retried within a time budget,
permanent ones at once, each try bounded by ``read_timeout``); a reader never sees a partial object under a
final name (local: temp name + ``os.replace``; object stores: the upload is discarded, multipart aborted, when
the writer fails)."""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Collection, Iterator, Mapping
from typing import IO, Any

import fsspec
from fsspec.asyn import AsyncFileSystem

from pass_wds.storage.errors import ReadOnlyError, StorageNotFoundError, bucket_of, classify, guard, redact
from pass_wds.storage.log import get_logger
from pass_wds.storage.retry import RetryPolicy, call, run_bounded
from pass_wds.storage.stream import http_stat, open_stream
from pass_wds.storage.urls import HTTP as _HTTP
from pass_wds.storage.urls import get_fs, is_local, is_object_store, join, read_fs
from pass_wds.storage.urls import protocol as _protocol

log = get_logger(__name__)

TMP_MARK = ".tmp-"
# stores whose writers upload on close and can abandon an unfinished upload (discard): nothing is visible
# under the final name before a successful close
_DISCARDING = {"s3", "s3a", "gs", "gcs"}


def _fresh(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Forget cached listings, so existence and sizes reflect the store now (resume decisions need it)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)


def _bounded(
    fs: fsspec.AbstractFileSystem, method: str, policy: RetryPolicy, *args: Any, **kwargs: Any
) -> Any:
    """``fs.<method>(*args)``, through the async API with a ``read_timeout`` where the filesystem has one (a
    stalled server is a failed try, not a hang)."""
    if isinstance(fs, AsyncFileSystem):
        return run_bounded(fs, getattr(fs, f"_{method}")(*args, **kwargs), policy.read_timeout)
    return getattr(fs, method)(*args, **kwargs)


def exists(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> bool:
    """Whether ``url`` exists; only a real "not found" answer is False (a 503 or a refused connection is
    retried, a 403 is a :class:`~pass_wds.storage.errors.StoragePermissionError`)."""
    policy = retry or RetryPolicy()
    with guard(url, storage_options, "read"):
        fs, path = read_fs(url, storage_options)
    if is_local(url):
        with guard(url, storage_options, "read"):
            return bool(fs.exists(path))

    def once() -> bool:
        _fresh(fs, path)
        if _protocol(url) in _HTTP:
            return bool(run_bounded(fs, http_stat(fs, path), policy.read_timeout) is not None)
        if _protocol(url) in ("s3", "s3a"):
            try:
                _bounded(fs, "info", policy, path)
            except FileNotFoundError:
                return False
            except Exception as exc:
                if classify(exc).kind == "not-found":
                    return False
                raise
            return True
        return bool(_bounded(fs, "exists", policy, path))

    return call(once, url, storage_options, "read", policy)


def read_bytes(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> bytes:
    """The whole object; remote reads go through :func:`open_stream` (retries, resume, length check)."""
    if is_local(url):
        with guard(url, storage_options, "read"):
            fs, path = get_fs(url, storage_options)
            with open(path, "rb") as f:
                return f.read()
    with open_stream(url, storage_options=storage_options, retry=retry) as f:
        return f.read()


def read_text(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> str:
    return read_bytes(url, storage_options, retry=retry).decode("utf-8")


def open_read(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    retry: RetryPolicy | None = None,
    **kwargs: Any,
) -> IO[bytes]:
    """A seekable file. HTTP(S) and S3 objects are read as retried, resuming ranged streams
    (:func:`open_stream`; a seek opens a new range); other stores use fsspec's own file (``kwargs``)."""
    if _protocol(url) in _HTTP | {"s3", "s3a"}:
        return open_stream(url, 0, None, storage_options, retry=retry)
    with guard(url, storage_options, "open"):
        fs, path = get_fs(url, storage_options)
        return fs.open(path, "rb", **kwargs)  # type: ignore[no-any-return]


def _check_writable_proto(url: str) -> None:
    if _protocol(url) in _HTTP:
        raise ReadOnlyError(f"{redact(url)} is read-only: http(s) locations can be read but not written")


def makedirs(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> None:
    """Create a folder; on object stores only check that the bucket exists (never create a bucket)."""
    _check_writable_proto(url)
    with guard(url, storage_options, "create"):
        fs, path = get_fs(url, storage_options)
    if is_object_store(url):
        _check_bucket(read_fs(url, storage_options)[0], url, storage_options, retry or RetryPolicy())
        return
    with guard(url, storage_options, "create"):
        fs.makedirs(path, exist_ok=True)


def _check_bucket(
    fs: fsspec.AbstractFileSystem, url: str, storage_options: Mapping[str, Any] | None, policy: RetryPolicy
) -> None:
    bucket = bucket_of(url)

    def missing() -> StorageNotFoundError:
        return StorageNotFoundError(f"bucket {bucket!r} does not exist ({redact(url, storage_options)})")

    def once() -> None:
        if _protocol(url) not in ("s3", "s3a"):
            if not _bounded(fs, "exists", policy, bucket):
                raise missing()
            return
        try:
            _bounded(fs, "call_s3", policy, "head_bucket", Bucket=bucket)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) or classify(exc).kind in ("not-found", "no-bucket"):
                raise missing() from None
            raise

    call(once, url, storage_options, "check", policy)


def check_writable(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> None:
    """Fail fast with a one-line :class:`StorageError` when ``url`` cannot be written.

    Checks the endpoint, the bucket and write permission by writing and deleting a tiny probe object, so a
    long conversion never starts against a location it cannot finish in.
    """
    _check_writable_proto(url)
    makedirs(url, storage_options, retry=retry)
    probe = join(url, f".pass-wds-probe{TMP_MARK}{uuid.uuid4().hex[:12]}")
    write_bytes(probe, b"", storage_options)
    remove(probe, storage_options)


def remove(url: str, storage_options: dict[str, Any] | None = None, recursive: bool = False) -> None:
    _check_writable_proto(url)
    with guard(url, storage_options, "remove"):
        fs, path = get_fs(url, storage_options)
        _fresh(fs, path)
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def listdir(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> list[str]:
    """Base names of the entries directly under ``url`` (empty when it does not exist)."""
    policy = retry or RetryPolicy()
    with guard(url, storage_options, "list"):
        fs, path = read_fs(url, storage_options)

    def once() -> list[str] | None:
        _fresh(fs, path)
        try:
            return list(_bounded(fs, "ls", policy, path, detail=False))
        except FileNotFoundError:
            return None

    if is_local(url):
        with guard(url, storage_options, "list"):
            found = once()
    else:
        found = call(once, url, storage_options, "list", policy)
    if found is None:
        if is_object_store(url):
            _check_bucket(
                fs, url, storage_options, policy
            )  # a missing bucket is an error, not an empty folder
        return []
    entries = found
    base = path.rstrip("/")
    return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries if str(e).rstrip("/") != base)


def file_size(
    url: str, storage_options: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> int:
    policy = retry or RetryPolicy()
    with guard(url, storage_options, "stat"):
        fs, path = read_fs(url, storage_options)
    if is_local(url):
        with guard(url, storage_options, "stat"):
            return int(fs.size(path))

    def once() -> int:
        _fresh(fs, path)
        if _protocol(url) in _HTTP:
            size = run_bounded(fs, http_stat(fs, path), policy.read_timeout)
            if size is None:
                raise FileNotFoundError(url)
            return int(size)
        return int(_bounded(fs, "info", policy, path)["size"])

    return call(once, url, storage_options, "stat", policy)


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
        with guard(url, storage_options, "write"):
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
    with guard(url, storage_options, "write"):
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
            with guard(url, storage_options, "write"):
                fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
            raise
        return
    with guard(url, storage_options, "write"):
        f = fs.open(path, "wb", **kwargs)
    try:
        yield f
    except BaseException:
        _discard(f, fs, path)
        raise
    try:
        with guard(url, storage_options, "write"):
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


def temp_of(name: str) -> str | None:
    """The final name an atomic write's temp file ``<name>.tmp-<12 hex>`` stands for, else None."""
    base, mark, tag = name.rpartition(TMP_MARK)
    if mark and base and len(tag) == 12 and all(c in "0123456789abcdef" for c in tag):
        return base
    return None


def remove_temp_files(
    url: str,
    storage_options: dict[str, Any] | None = None,
    names: Collection[str] | None = None,
    keep: Collection[str] = (),
    *,
    retry: RetryPolicy | None = None,
) -> list[str]:
    """Delete leftovers of interrupted atomic writes directly under ``url``; return their names.

    With ``names``, only temp files of those final names (what the caller itself writes) are touched: a
    ``*.tmp-*`` file of someone else in the same folder is not ours to delete; entries in ``keep`` (found
    there before the caller wrote anything) are never removed. On S3 this also aborts
    incomplete multipart uploads (invisible, but billed) of objects directly under ``url`` (of ``names`` only,
    when given) that were started before this call: call it before starting writers, not while they run.
    """
    removed = [
        n
        for n in listdir(url, storage_options, retry=retry)
        if (base := temp_of(n)) is not None and (names is None or base in names) and n not in keep
    ]
    for name in removed:
        remove(join(url, name), storage_options)
    if _protocol(url) in ("s3", "s3a"):
        removed += _abort_stale_uploads(url, storage_options, names)
    return removed


def _abort_stale_uploads(
    url: str, storage_options: dict[str, Any] | None, names: Collection[str] | None = None
) -> list[str]:
    import datetime

    started = datetime.datetime.now(datetime.timezone.utc)
    with guard(url, storage_options, "list uploads in"):
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
            if names is not None and key[len(prefix) :] not in names:
                continue
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up["UploadId"])  # type: ignore[attr-defined]
            aborted.append(f"{posixpath.basename(key)} (incomplete upload)")
        return aborted


def process_alive(pid: int) -> bool:
    """Whether a process of this host still runs (a lock or temp file of a dead one is stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
