"""Optional node-local shard cache for multi-epoch training from a remote store.

Every worker and rank on a node shares one cache folder. A shard is downloaded once per node: the first
process to want it takes an exclusive ``fcntl.flock`` on ``<entry>.lock`` and downloads into a temporary file
that is renamed into place when complete (and checked against the expected size / sha256 when given);
processes that want the same shard meanwhile block on the lock and then open the finished file. Entries are
named ``<sha256(url, endpoint)[:16]>-<basename>``, so shards of different datasets (or the same path on two
endpoints) never collide. The total size is kept under ``max_bytes`` by evicting the least recently used
entries (file mtime is the access time, stamped by the cache in nanoseconds on download and on every hit: the
kernel's own stamps are as coarse as a few milliseconds, too coarse to order accesses in a busy loader).

A disk that cannot hold a shard (other files fill it, or the shard is larger than the disk) first costs the
cache's own least recently used entries; if that is not enough it is a :class:`CacheFullError` of one line
naming the folder, the free space and the shard's size (never a bare ``ENOSPC`` from a worker), or, with
``on_full="stream"``, the shard is read directly from storage instead and the cache says so once per process.
A download cut by a full disk leaves no partial entry: the temp file goes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pass_wds import storage
from pass_wds.storage.errors import CacheFullError
from pass_wds.storage.log import get_logger

log = get_logger(__name__)
_FULL = (errno.ENOSPC, errno.EDQUOT)
ON_FULL = ("error", "stream")

_LOCK = ".lock"
_TMP = storage.TMP_MARK
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# the names entry_path and _download create: nothing else in the folder is the cache's to evict or delete
_ENTRY = re.compile(r"[0-9a-f]{16}-[A-Za-z0-9._-]{1,80}")
_TEMP = re.compile(r"(?P<entry>.+)" + re.escape(_TMP) + r"(?P<pid>\d+)-[0-9a-f]{8}")


@dataclass
class ShardCache:
    """A size-capped LRU cache of whole remote objects in ``directory`` (shared by processes on a node).

    A single object larger than ``max_bytes`` is still cached (it is needed), with everything else evicted.
    """

    directory: str
    max_bytes: int
    retry: storage.RetryPolicy | None = None
    on_full: str = "error"
    """What a shard the disk cannot hold does: ``error`` (:class:`CacheFullError`) or ``stream`` (read it
    directly from storage, said once per process)."""
    _said_full: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"cache max_bytes must be positive, got {self.max_bytes}")
        if self.on_full not in ON_FULL:
            raise ValueError(f"cache on_full must be 'error' or 'stream', got {self.on_full!r}")
        os.makedirs(self.directory, exist_ok=True)

    # ----------------------------------------------------------------------------------------- naming

    def entry_path(self, url: str, storage_options: dict[str, Any] | None = None) -> str:
        """The cache file for ``url``: a hash of the URL and endpoint, plus a readable base name."""
        # the URL already names an HTTP server; an S3 URL needs its endpoint to say which store it is
        ep = "" if url.startswith(("http://", "https://")) else storage.endpoint(url, storage_options)
        digest = hashlib.sha256(json.dumps([url, ep]).encode()).hexdigest()[:16]
        base = _SAFE.sub("_", url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0])[-80:] or "object"
        return os.path.join(self.directory, f"{digest}-{base}")

    # ------------------------------------------------------------------------------------------- get

    def get(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        size: int | None = None,
        sha256: str | None = None,
    ) -> str:
        """Local path of a complete copy of ``url``, downloading it if no process on this node has yet.

        ``size`` / ``sha256`` (from index.json) are checked before the copy is committed; a mismatch raises
        :class:`~pass_wds.storage.StorageError` and caches nothing. A shard the disk cannot hold raises
        :class:`CacheFullError`, or with ``on_full="stream"`` returns ``url`` itself (read it directly).
        """
        if storage.is_local(url):
            return url.removeprefix("file://")
        path = self.entry_path(url, storage_options)
        if self._touch(path):
            return path
        try:
            with self._locked(path):
                if not self._touch(path):  # another process may have finished it while we waited
                    self._make_room(url, size, storage_options)
                    self._download(url, path, storage_options, size, sha256)
        except CacheFullError as e:
            if self.on_full != "stream":
                raise
            if not self._said_full:
                self._said_full = True
                log.warning("%s: reading such shards directly from storage (cache_full='stream')", e.fact)
            return url
        self.evict(keep=path)
        return path

    def _full(self, url: str, so: dict[str, Any] | None, needs: str) -> CacheFullError:
        free = shutil.disk_usage(self.directory).free
        fact = (
            f"node cache {self.directory} is full: {free:,} bytes free, shard {storage.redact(url, so)} "
            f"needs {needs}"
        )
        error = CacheFullError(
            f"{fact}; free space there, lower cache_bytes, or set cache_full='stream' to read shards that do "
            "not fit directly from storage"
        )
        error.fact = fact
        return error

    def _make_room(self, url: str, size: int | None, so: dict[str, Any] | None) -> None:
        """Before a download of known size: evict the cache's own least recently used entries until the disk
        can hold it (files the cache did not write are never touched); if it still cannot, the disk is full."""
        if size is None or shutil.disk_usage(self.directory).free >= size:
            return
        for _, _, entry in self.entries():
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry)
            if shutil.disk_usage(self.directory).free >= size:
                return
        raise self._full(url, so, f"{size:,} bytes")

    def _touch(self, path: str) -> bool:
        """Mark ``path`` used now; False if it is not (or no longer) in the cache."""
        now = time.time_ns()
        try:
            os.utime(path, ns=(now, now))
            return True
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        try:
            fd = os.open(path + _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in _FULL:
                raise CacheFullError(
                    f"node cache {self.directory} is full: {shutil.disk_usage(self.directory).free:,} bytes free, "
                    "not even room for a lock file; free space there or set cache_full='stream'"
                ) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _download(
        self, url: str, path: str, so: dict[str, Any] | None, size: int | None, sha256: str | None
    ) -> None:
        tmp = f"{path}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        h = hashlib.sha256()
        n = 0
        try:
            with storage.open_stream(url, 0, None, so, retry=self.retry) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
            where = storage.redact(url, so)
            if size is not None and n != size:
                raise storage.StorageError(f"{where}: downloaded {n} bytes, index.json says {size}")
            if sha256 is not None and h.hexdigest() != sha256:
                raise storage.StorageError(f"{where}: sha256 differs from index.json (corrupt or changed)")
            self._touch(tmp)  # the access time of the new entry (rename keeps it)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)  # no partial entry, ever
            if e.errno in _FULL:
                needs = f"{size:,} bytes" if size is not None else f"more than the {n:,} bytes written"
                raise self._full(url, so, needs) from None
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise

    # ---------------------------------------------------------------------------------------- eviction

    def entries(self) -> list[tuple[int, int, str]]:
        """(last access, size, path) of the complete entries, least recently used first."""
        out = []
        with os.scandir(self.directory) as it:
            for e in it:
                if e.name.endswith(_LOCK) or _TMP in e.name or not _ENTRY.fullmatch(e.name):
                    continue  # a lock, a download in progress, or a file the cache did not write
                with contextlib.suppress(FileNotFoundError):
                    st = e.stat()
                    out.append((st.st_mtime_ns, st.st_size, e.path))
        return sorted(out)

    def size(self) -> int:
        return sum(s for _, s, _ in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete least recently used entries until the cache fits ``max_bytes``; return what was removed.

        Runs under a cache-wide lock. Downloads in progress are temp files and never evicted; a file already
        opened stays readable after eviction (POSIX), and :meth:`open` re-fetches an entry evicted between
        ``get`` and ``open``. Temp files of killed downloads are removed; small ``.lock`` files are kept (a
        lock file must not be deleted while another process may wait on it).
        """
        removed: list[str] = []
        fd = os.open(os.path.join(self.directory, ".evict" + _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._remove_dead_temp_files()
            entries = self.entries()
            total = sum(s for _, s, _ in entries)
            for _, sz, path in entries:
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
                total -= sz
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return removed

    def _remove_dead_temp_files(self) -> None:
        with os.scandir(self.directory) as it:
            for e in it:
                m = _TEMP.fullmatch(e.name)
                if m is None or not _ENTRY.fullmatch(m["entry"]):
                    continue
                pid = m["pid"]
                try:
                    dead = (
                        pid.isdigit()
                        and not storage.process_alive(int(pid))
                        or time.time() - e.stat().st_mtime > 24 * 3600
                    )
                except FileNotFoundError:  # its download finished (renamed into place) since the scan
                    continue
                if dead:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(e.path)
