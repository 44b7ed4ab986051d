"""Writing one shard: deterministic ustar members, a DALI index, and a sha256, computed in one pass.

A shard is an independent task (:class:`ShardTask` → :class:`ShardResult`): it reads each planned image by
offset, checks what it really is, and appends ``<key>.<ext>`` and ``<key>.json`` to the archive. The tar and
its ``.idx`` are written through :func:`storage.atomic_write`, so they appear under their final names only
when complete. Memory stays at one image at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from pass_wds import storage
from pass_wds.errors import first_line
from pass_wds.format import reasons
from pass_wds.format.idx import idx_line, idx_text
from pass_wds.format.keys import safe_key
from pass_wds.format.samples import build_sample_json, provenance
from pass_wds.format.tar import BLOCK, END_OF_ARCHIVE, padded, tar_header
from pass_wds.imaging.probe import ImageInfo, Rejected, inspect_image, reencode, rejection


@dataclass(frozen=True, slots=True)
class TaskItem:
    """Everything needed to write one sample (picklable; sent to worker processes)."""

    key: str
    url: str
    input_name: str  # recorded as the provenance "source"
    member: str
    offset: int
    size: int
    from_tar: bool
    row: str | None


@dataclass(frozen=True)
class WriteOptions:
    validate: bool = True
    resize_max_side: int | None = None
    quality: int | None = None
    max_image_pixels: int = 89_478_485
    attribution_columns: tuple[str, ...] = ()
    storage_options: dict[str, Any] = field(default_factory=dict)
    retry: storage.RetryPolicy | None = None  # of every input read (None: the default policy)

    @property
    def reencode(self) -> bool:
        return self.resize_max_side is not None or self.quality is not None


@dataclass(frozen=True)
class ShardTask:
    index: int
    url: str
    idx_url: str
    items: list[TaskItem]
    options: WriteOptions


@dataclass
class ShardResult:
    index: int
    nsamples: int
    filesize: int
    sha256: str
    input_bytes: int
    rejections: list[dict[str, str]]
    attribution: list[list[str]]
    image_exts: list[str] = field(default_factory=list)  # extensions of the images written (croissant.json)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


# ----------------------------------------------------------------------------------------------- images


def _reencode_or_reject(data: bytes, opts: WriteOptions) -> tuple[bytes, int, int]:
    """:func:`reencode`, where a decoder error is a ``corrupt`` rejection: without ``--validate`` this is the
    first full decode, so a truncated or damaged image shows only here."""
    try:
        return reencode(
            data, max_side=opts.resize_max_side, quality=opts.quality or 95, max_pixels=opts.max_image_pixels
        )
    except Exception as e:
        raise rejection(e, "re-encoding failed: ") from None


class TarWriter:
    """Appends samples to a binary stream; a helper thread hashes the same bytes in order.

    Samples are gathered into batches of a few MB and written with one ``writev`` (local files) or one
    ``write``, and sha256 runs beside the writes on the same buffers (hashlib releases the GIL), so a lossless
    repack copies each byte once, from the page cache into the output. On local files the kernel is asked to
    start writing each batch back at once, so the final fsync finds little left to do.
    """

    BATCH = 4 << 20
    MAX_PARTS = 512  # well under IOV_MAX (1024)

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.offset = 0
        self._hash = hashlib.sha256()
        self._queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._hasher = threading.Thread(target=self._run_hasher, name="pass-wds-sha256", daemon=True)
        self._hasher.start()
        self._digest: str | None = None
        self._parts: list[bytes] = []
        self._written = 0  # bytes handed to the stream; self.offset - self._written are still in _parts
        self._fd: int | None = None
        if isinstance(f, io.BufferedWriter | io.FileIO):
            f.flush()
            self._fd = f.fileno()

    def _run_hasher(self) -> None:
        while (parts := self._queue.get()) is not None:
            for part in parts:
                self._hash.update(part)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        if not parts:
            return
        if self._fd is None:
            self._f.write(b"".join(parts))
        else:
            _writev_all(self._fd, parts)
            start, end = self._written, self.offset
            with contextlib.suppress(OSError):  # DONTNEED starts writeback of the dirty range now (Linux)
                os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)
        self._written = self.offset
        self._queue.put(parts)

    def add_sample(self, members: list[tuple[str, bytes]]) -> list[int]:
        """Append a sample's members back to back; return each member's data offset (what DALI's index records)."""
        offsets = []
        pos = self.offset
        parts = self._parts
        for name, data in members:
            parts.append(tar_header(name, len(data)))
            offsets.append(pos + BLOCK)
            parts.append(data)
            pad = padded(len(data)) - len(data)
            if pad:
                parts.append(_ZEROS[:pad])
            pos += BLOCK + len(data) + pad
        self.offset = pos
        if self.offset - self._written >= self.BATCH or len(parts) >= self.MAX_PARTS:
            self._flush()
        return offsets

    def add_raw(self, blocks: bytes) -> None:
        """Append members that are already in tar form (headers, data, padding: whole 512-byte blocks), e.g.
        a sample's blocks copied from another shard by ``make-shards update``."""
        if len(blocks) % BLOCK:
            raise ValueError(f"{len(blocks)} bytes are not whole tar blocks")
        self._parts.append(blocks)
        self.offset += len(blocks)
        if self.offset - self._written >= self.BATCH or len(self._parts) >= self.MAX_PARTS:
            self._flush()

    def close(self) -> None:
        """Write the end-of-archive blocks and finish the hash."""
        self._parts.append(b"\0" * END_OF_ARCHIVE)
        self.offset += END_OF_ARCHIVE
        self._flush()
        self.hexdigest()

    def hexdigest(self) -> str:
        if self._digest is None:
            self._queue.put(None)
            self._hasher.join()
            self._digest = self._hash.hexdigest()
        return self._digest


_ZEROS = bytes(BLOCK)


def _writev_all(fd: int, parts: list[bytes]) -> None:
    """``os.writev`` until every byte is written (a write may stop short, e.g. on a signal)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


# ---------------------------------------------------------------------------------------------- shards


class _Prefetcher:
    """Reads a shard's items in plan order while keeping up to ``window_bytes`` of reads in flight.

    Plan order jumps between archives (every shard is a random sample), so reading one image at a time
    leaves the disk or the object store idle between small random reads. A few threads reading ahead keep the
    I/O queue full: positional reads (:class:`~pass_wds.storage.RangeReader`: ``pread`` locally, one ranged GET per image on
    object stores). Memory stays bounded by the window.
    """

    def __init__(
        self,
        items: list[TaskItem],
        storage_options: dict[str, Any],
        window_bytes: int = 32 << 20,
        threads: int = 8,
        retry: storage.RetryPolicy | None = None,
    ) -> None:
        self._items = items
        self._so = storage_options
        self._retry = retry
        self._window = window_bytes
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pass-wds-read")
        self._readers: dict[str, storage.RangeReader] = {}

    def _reader(self, url: str) -> storage.RangeReader:
        reader = self._readers.get(url)
        if reader is None:
            reader = self._readers[url] = storage.RangeReader(url, self._so, retry=self._retry)
        return reader

    def _open(self, item: TaskItem) -> None:
        """Open an archive's reader here, not racing in the threads (an archive that cannot be opened
        fails each of its items in :meth:`_read`)."""
        if item.from_tar:
            with contextlib.suppress(OSError):
                self._reader(item.url)

    def _read(self, item: TaskItem) -> bytes | Rejected:
        """The item's bytes, or a ``read-error`` rejection when this one input cannot be read (permission
        denied, gone since it was listed, cut short, an I/O error): the other items can still be written.
        Losing the store itself (connection, retries exhausted) is not one item's fault and ends the task."""
        try:
            if not item.from_tar:
                return storage.read_bytes(item.url, self._so, retry=self._retry)
            return self._reader(item.url).read(item.offset, item.size)
        except (ConnectionError, TimeoutError):
            raise
        except OSError as e:
            if isinstance(e, PermissionError) and not storage.is_local(item.url):
                raise  # a store refusing us (expired credentials) refuses every item: not this item's fault
            return Rejected(reasons.READ_ERROR, storage.redact(first_line(e), self._so))

    def __iter__(self) -> Iterator[tuple[TaskItem, bytes | Rejected]]:
        if all(item.from_tar and storage.is_local(item.url) for item in self._items):
            yield from self._iter_local()
            return
        pending: deque[tuple[TaskItem, Future[bytes | Rejected]]] = deque()
        in_flight = 0
        nxt = 0
        while nxt < len(self._items) or pending:
            while nxt < len(self._items) and (
                not pending or in_flight + self._items[nxt].size <= self._window
            ):
                item = self._items[nxt]
                self._open(item)
                pending.append((item, self._pool.submit(self._read, item)))
                in_flight += item.size
                nxt += 1
            item, fut = pending.popleft()
            in_flight -= item.size
            yield item, fut.result()

    def _iter_local(self) -> Iterator[tuple[TaskItem, bytes | Rejected]]:
        """Local archives need no threads: the kernel reads ahead what ``POSIX_FADV_WILLNEED`` names, and
        each image is then one ``pread`` (from the page cache, once the listing has just streamed the archive)."""
        items = self._items
        ahead, in_flight = 0, 0
        for i, item in enumerate(items):
            while ahead < len(items) and (ahead <= i or in_flight < self._window):
                nxt = items[ahead]
                with contextlib.suppress(OSError):
                    self._reader(nxt.url).advise(nxt.offset, nxt.size)
                in_flight += nxt.size
                ahead += 1
            in_flight -= item.size
            yield item, self._read(item)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for reader in self._readers.values():
            reader.close()


def warm_up() -> None:
    """A no-op task: submitting it starts a pool worker, which imports this module on the way."""


def write_shard(task: ShardTask) -> ShardResult:
    """Write one planned shard (and its ``.idx``); bad images are left out and reported."""
    opts = task.options
    reader = _Prefetcher(task.items, opts.storage_options, retry=opts.retry)
    rejections: list[dict[str, str]] = []
    attributed: list[tuple[str, str | None]] = []
    idx_lines: list[str] = []
    exts: set[str] = set()
    input_bytes = 0
    tw: TarWriter | None = None
    try:
        with storage.atomic_write(task.url, opts.storage_options) as f:
            tw = TarWriter(f)
            for item, data in reader:
                try:
                    if isinstance(data, Rejected):
                        raise data
                    input_bytes += len(data)
                    info = inspect_image(
                        data, validate=opts.validate, max_pixels=opts.max_image_pixels, reencode=opts.reencode
                    )
                    original = None
                    if opts.reencode:
                        original = (info.width, info.height, info.format)
                        data, w, h = _reencode_or_reject(data, opts)
                        info = ImageInfo("JPEG", "jpg", w, h)
                except Rejected as r:
                    rejections.append(
                        reasons.Rejection(
                            item.key, item.input_name, item.member, r.reason, r.detail
                        ).to_json()
                    )
                    continue
                prov = provenance(
                    item.key,
                    item.input_name,
                    item.member,
                    width=info.width,
                    height=info.height,
                    format=info.format,
                    data=data,
                    original=original,
                )
                key = safe_key(item.key)
                meta = build_sample_json(item.row, prov)
                img_name, json_name = f"{key}.{info.ext}", f"{key}.json"
                img_off, json_off = tw.add_sample([(img_name, data), (json_name, meta)])
                idx_lines.append(idx_line([(img_name, img_off, len(data)), (json_name, json_off, len(meta))]))
                exts.add(info.ext)
                if opts.attribution_columns:
                    attributed.append((key, item.row))
            tw.close()
        storage.write_bytes(task.idx_url, idx_text(idx_lines), opts.storage_options)
    finally:
        reader.close()
        if tw is not None:
            tw.hexdigest()  # stops the hashing thread, also when the shard failed
    assert tw is not None
    return ShardResult(
        index=task.index,
        nsamples=len(idx_lines),
        filesize=tw.offset,
        sha256=tw.hexdigest(),
        input_bytes=input_bytes,
        rejections=rejections,
        attribution=attribution_rows(attributed, opts.attribution_columns),
        image_exts=sorted(exts),
    )


def attribution_rows(samples: list[tuple[str, str | None]], columns: tuple[str, ...]) -> list[list[str]]:
    """``[key, *values of columns]`` per written sample, for attribution.csv (empty cell for a null or absent value).

    All rows of a shard are decoded with one ``json.loads`` call: per-row calls cost more than the parsing.
    """
    if not columns or not samples:
        return []
    decoded = json.loads("[" + ",".join("{" + (row or "") + "}" for _, row in samples) + "]")
    return [
        [key, *("" if (v := values.get(c)) is None else str(v) for c in columns)]
        for (key, _), values in zip(samples, decoded, strict=True)
    ]


__all__ = ["BLOCK", "ShardResult", "ShardTask", "TaskItem", "WriteOptions", "write_shard"]
