"""URL classification: which scheme a URL has, how paths join under it, and its fsspec filesystem."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import url_to_fs

OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}
HTTP = {"http", "https"}


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def is_object_store(url: str) -> bool:
    return protocol(url) in OBJECT_STORES


def without_query(url: str) -> str:
    """An HTTP(S) URL without its query string and fragment: the path that names the object. A presigned
    URL's signature is no part of its file name, extension or folder."""
    if url.startswith(("http://", "https://")):
        return url.split("#", 1)[0].split("?", 1)[0]
    return url


def has_query(url: str) -> bool:
    return without_query(url) != url


def join(base: str, *names: str) -> str:
    """Join path components onto a URL or local path without breaking the scheme."""
    if is_local(base) and not base.startswith("file://"):
        return os.path.join(base, *names)
    return posixpath.join(base.rstrip("/"), *names)


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path (instances are cached by fsspec)."""
    fs, path = url_to_fs(url, **(storage_options or {}))
    return fs, path


NO_BACKEND_RETRIES = {"mode": "standard", "total_max_attempts": 1}
"""botocore's own retries for the filesystem pass-wds reads S3 through: none, because every read already runs
under pass-wds's retry policy (one budget, each try one request, the real cause in the final error)."""


def read_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """:func:`get_fs` for reads. On S3 its client makes one attempt per request unless the options set
    ``config_kwargs.retries`` themselves: retries nested in retries would multiply the waits and hide the
    cause (a stalled series of 503s would end as a timeout). Writes keep botocore's retries."""
    so = dict(storage_options or {})
    if protocol(url) in ("s3", "s3a"):
        config = dict(so.get("config_kwargs") or {})
        if "retries" not in config:
            so["config_kwargs"] = {**config, "retries": dict(NO_BACKEND_RETRIES)}
    return get_fs(url, so)


def endpoint(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The server a URL resolves to: the configured endpoint (``storage_options`` or the AWS environment) for
    S3, else the URL's host; ``""`` for AWS S3 itself and local paths. Cache keys and error messages use it."""
    so = storage_options or {}
    ep = (so.get("client_kwargs") or {}).get("endpoint_url") or so.get("endpoint_url")
    if protocol(url) in ("s3", "s3a"):
        return str(ep or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "")
    if ep:
        return str(ep)
    return url.split("/", 3)[2] if "://" in url and not is_local(url) else ""
