"""The single storage layer: every byte pass-wds reads or writes goes through fsspec here.

Local paths, ``file://``, ``s3://`` (s3fs; standard AWS configuration and ``AWS_ENDPOINT_URL`` work) and
``http(s)://`` (read-only) all work the same way. Filesystem instances are cached by fsspec per
``storage_options``, so sessions and connection pools are reused across shards.

* :mod:`~pass_wds.storage.urls`: URL classification and joining (no I/O).
* :mod:`~pass_wds.storage.errors`: one-line :class:`StorageError` subclasses for what a user can fix, and
  :func:`redact`, which strips credentials and signed-URL parameters from every message.
* :mod:`~pass_wds.storage.fs`: filesystems, reads, listings and atomic writes.
* :mod:`~pass_wds.storage.stream`: retrying ranged streams (:func:`open_stream`) and positional reads
  (:class:`RangeReader`) that resume at the byte offset reached.
* :mod:`~pass_wds.storage.cache`: the node-local shard cache of the loader (imported on its own; it builds on
  the modules above, never the other way round).
* :mod:`~pass_wds.storage.forks`: a forked child (a DataLoader worker) never touches its parent's connections
  (registered on import, before any filesystem exists).
"""

from pass_wds.storage import forks  # noqa: F401  (registers the fork hook)
from pass_wds.storage.errors import (
    ReadOnlyError,
    StorageConnectionError,
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    get_logger,
    redact,
    remember_secrets,
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
from pass_wds.storage.stream import RangeReader, RetryPolicy, is_transient, open_stream
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
    "TMP_MARK",
    "RangeReader",
    "ReadOnlyError",
    "RetryPolicy",
    "StorageConnectionError",
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "atomic_write",
    "check_writable",
    "endpoint",
    "exists",
    "file_size",
    "get_fs",
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
    "without_query",
    "has_query",
    "remember_secrets",
    "get_logger",
    "remove",
    "remove_temp_files",
    "temp_of",
    "translate_error",
    "write_bytes",
]
