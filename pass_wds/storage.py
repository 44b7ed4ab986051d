"""The single storage layer: every byte pass-wds reads or writes goes through fsspec here.

Local paths, ``file://``, ``s3://`` and ``http(s)://`` all work the same way. Writes are atomic: a reader
never sees a partial object under a final name (local: temp name + ``os.replace``; object stores: the upload
is discarded, never committed, when the writer fails).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

TMP_MARK = ".tmp-"


class StorageError(RuntimeError):
    """A storage location cannot be used (missing, unreadable, not writable)."""


_SECRET_QUERY = re.compile(
    r"([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig|token|access_token|"
    r"AWSAccessKeyId|Credential)=)[^&\s]*",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """Strip credentials from URLs or messages: user:password@ and signature/token query parameters."""
    return _SECRET_QUERY.sub(r"\1REDACTED", _USERINFO.sub(r"\1REDACTED@", text))


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path."""
    fs, path = url_to_fs(url, **(storage_options or {}))
    return fs, path


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def join(base: str, *names: str) -> str:
    """Join path components onto a URL or local path without breaking the scheme."""
    if is_local(base) and not base.startswith("file://"):
        return os.path.join(base, *names)
    return posixpath.join(base.rstrip("/"), *names)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = get_fs(url, storage_options)
    return bool(fs.exists(path))


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    fs, path = get_fs(url, storage_options)
    return bytes(fs.cat_file(path))


def read_text(url: str, storage_options: dict[str, Any] | None = None) -> str:
    return read_bytes(url, storage_options).decode("utf-8")


def open_read(url: str, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> IO[bytes]:
    fs, path = get_fs(url, storage_options)
    return fs.open(path, "rb", **kwargs)  # type: ignore[no-any-return]


def makedirs(url: str, storage_options: dict[str, Any] | None = None) -> None:
    fs, path = get_fs(url, storage_options)
    fs.makedirs(path, exist_ok=True)


def remove(url: str, storage_options: dict[str, Any] | None = None, recursive: bool = False) -> None:
    fs, path = get_fs(url, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def listdir(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Base names of the entries directly under ``url`` (empty when it does not exist)."""
    fs, path = get_fs(url, storage_options)
    try:
        entries = fs.ls(path, detail=False, refresh=True) if _supports_refresh(fs) else fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)


def _supports_refresh(fs: fsspec.AbstractFileSystem) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def file_size(url: str, storage_options: dict[str, Any] | None = None) -> int:
    fs, path = get_fs(url, storage_options)
    return int(fs.size(path))


@contextlib.contextmanager
def atomic_write(url: str, storage_options: dict[str, Any] | None = None) -> Iterator[IO[bytes]]:
    """Open ``url`` for binary writing so that it appears under its name only when complete.

    Local files are written to ``<name>.tmp-<random>`` in the same directory and renamed; a crash leaves only
    the temp file, which the next run removes. On object stores the upload is committed on close (single PUT or
    CompleteMultipartUpload) and discarded on any exception, so no truncated object ever becomes visible.
    """
    fs, path = get_fs(url, storage_options)
    if is_local(url):
        directory = os.path.dirname(path) or "."
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
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        discard = getattr(f, "discard", None)
        if discard is not None:
            discard()
        else:  # a store without discard: never leave the partial object behind
            with contextlib.suppress(Exception):
                f.close()
            with contextlib.suppress(Exception):
                fs.rm(path)
        raise
    f.close()


def write_bytes(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    with atomic_write(url, storage_options) as f:
        f.write(data)


def remove_temp_files(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Delete leftovers of interrupted atomic writes directly under ``url``; return their names."""
    removed = [n for n in listdir(url, storage_options) if TMP_MARK in n]
    for name in removed:
        remove(join(url, name), storage_options)
    return removed


def open_stream(
    url: str,
    start: int = 0,
    end: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> IO[bytes]:
    """Open ``url`` for sequential reading of bytes ``[start, end)``.

    The loader streams shards through this. (Retries with backoff and resuming a broken stream at the byte
    offset reached are layered on here, so callers never re-read or skip bytes.)
    """
    fs, path = get_fs(url, storage_options)
    f = fs.open(path, "rb", block_size=4 * 1024 * 1024) if not is_local(url) else open(path, "rb")
    if start:
        f.seek(start)
    return f  # type: ignore[no-any-return]
