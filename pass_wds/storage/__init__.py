"""The single storage layer: every byte pass-wds reads or writes goes through fsspec here.

Local paths, ``file://``, ``s3://`` (s3fs; standard AWS configuration and ``AWS_ENDPOINT_URL`` work) and
``http(s)://`` (read-only) all work the same way. Filesystem instances are cached by fsspec per
``storage_options``, so sessions and connection pools are reused across shards.

* :mod:`~pass_wds.storage.urls`: URL classification and joining (no I/O).
* :mod:`~pass_wds.storage.errors`: one-line :class:`StorageError` subclasses that name the cause, the one
  classification of a failed request (:func:`classify`: transient or permanent), :func:`redact`, which strips
  credentials and signed-URL parameters from every message, and the helpers other modules share
  (:func:`guard`, :func:`first_line`, :func:`error_chain`, :func:`bucket_of`).
* :mod:`~pass_wds.storage.log`: :func:`get_logger`, whose every line is redacted.
* :mod:`~pass_wds.storage.retry`: the one retry policy (:class:`RetryPolicy`: a time budget, backoff with
  jitter, ``read_timeout``) and its loop (:class:`Attempts`, :func:`call`).
* :mod:`~pass_wds.storage.fs`: filesystems, reads, listings and atomic writes.
* :mod:`~pass_wds.storage.stream`: retrying ranged streams (:func:`open_stream`) and positional reads
  (:class:`RangeReader`) that resume at the byte offset reached.
* :mod:`~pass_wds.storage.cache`: the node-local shard cache of the loader (imported on its own; it builds on
  the modules above, never the other way round).
* :mod:`~pass_wds.storage.forks`: a forked child (a DataLoader worker) never touches its parent's connections
  (registered on import, before any filesystem exists).

No module here keeps process-wide mutable state: secrets to redact are passed with the ``storage_options``
they belong to, and retry settings with each call (``retry=RetryPolicy(...)``). The fork hook holds fsspec's
loop only for the instant of a fork.
"""

from pass_wds.storage import forks  # noqa: F401  (registers the fork hook)
from pass_wds.storage.errors import (
    CacheFullError,
    Cause,
    ReadOnlyError,
    StorageConnectionError,
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    bucket_of,
    classify,
    credentials_source,
    error_chain,
    first_line,
    guard,
    is_transient,
    redact,
    storage_error,
    translate_error,
)
from pass_wds.storage.fs import (
    TMP_MARK,
    atomic_write,
    check_writable,
    exists,
    file_size,
    listdir,
    makedirs,
    open_read,
    process_alive,
    read_bytes,
    read_text,
    remove,
    remove_temp_files,
    temp_of,
    write_bytes,
)
from pass_wds.storage.log import get_logger
from pass_wds.storage.retry import READ_TIMEOUT, RETRY_SECONDS, Attempts, RetryPolicy, call
from pass_wds.storage.stream import RangeReader, open_stream
from pass_wds.storage.urls import (
    endpoint,
    get_fs,
    has_query,
    is_local,
    is_object_store,
    join,
    protocol,
    without_query,
)

__all__ = [
    "READ_TIMEOUT",
    "RETRY_SECONDS",
    "TMP_MARK",
    "Attempts",
    "CacheFullError",
    "Cause",
    "RangeReader",
    "ReadOnlyError",
    "RetryPolicy",
    "StorageConnectionError",
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "atomic_write",
    "bucket_of",
    "call",
    "check_writable",
    "classify",
    "credentials_source",
    "endpoint",
    "error_chain",
    "exists",
    "file_size",
    "first_line",
    "get_fs",
    "get_logger",
    "guard",
    "has_query",
    "is_local",
    "is_object_store",
    "is_transient",
    "join",
    "listdir",
    "makedirs",
    "open_read",
    "open_stream",
    "process_alive",
    "protocol",
    "read_bytes",
    "read_text",
    "redact",
    "remove",
    "remove_temp_files",
    "storage_error",
    "temp_of",
    "translate_error",
    "without_query",
    "write_bytes",
]
