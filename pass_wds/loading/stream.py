"""Tar streaming with ``.idx`` seeks: read exactly the samples a reader needs, in the order it needs them.

Consecutive wanted samples of a shard become one *span*, read as one sequential byte range through
``storage.open_stream`` (one ranged GET on an object store). Small gaps are read through; larger gaps start a
new span, so resuming or reading a segment never reads a shard from its start. Gzipped shards cannot be
seeked: they are streamed from the start and unwanted samples are skipped without being kept.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import IO, Any

import numpy as np

from pass_wds import storage
from pass_wds.format import tar
from pass_wds.format.errors import ShardError
from pass_wds.format.idx import ShardIndex
from pass_wds.format.keys import group_by_key
from pass_wds.format.manifest import ShardInfo
from pass_wds.loading.shards import load_shard_index
from pass_wds.storage.cache import ShardCache

GAP_READ_THROUGH = 1 << 20
"""Read through gaps smaller than this instead of opening a new byte range."""

Sample = dict[str, Any]


class IndexCache:
    """Per-process LRU of parsed shard indexes (a worker touches only a few shards at a time)."""

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        storage_options: dict[str, Any] | None,
        size: int = 64,
        retry: storage.RetryPolicy | None = None,
    ):
        self.shards = shards
        self.storage_options = storage_options
        self.retry = retry
        self.size = size
        self._cache: OrderedDict[int, ShardIndex] = OrderedDict()
        self._sizes: dict[int, np.ndarray] = {}  # 8 bytes per sample: kept for every shard seen

    def get(self, shard: int) -> ShardIndex:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        index = load_shard_index(self.shards[shard], self.storage_options, self.retry)
        self._cache[shard] = index
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return index

    def sizes(self, offsets: np.ndarray, gids: np.ndarray) -> np.ndarray:
        """Byte size of each global sample id (sum of its members)."""
        out = np.zeros(len(gids), dtype=np.int64)
        shard_of = np.searchsorted(offsets, gids, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            shard = int(s)
            if shard not in self._sizes:
                self._sizes[shard] = self.get(shard).sample_bytes()
            out[sel] = self._sizes[shard][gids[sel] - offsets[s]]
        return out

    def footprints(self, threads: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """``(sizes, footprints)`` of every sample in global id order: data bytes (what a shuffle buffer
        holds) and bytes in its shard with headers and padding (what a read transfers). Reads every shard's
        ``.idx`` once, in ``threads`` parallel threads (object-store latency); keeps only the arrays."""
        from concurrent.futures import ThreadPoolExecutor

        def one(shard: int) -> tuple[np.ndarray, np.ndarray]:
            index = self._cache.get(shard) or load_shard_index(self.shards[shard], self.storage_options)
            sizes = index.sample_bytes()
            foot = np.fromiter(
                (sum(tar.member_bytes(m.size) for m in ms) for ms in index.members),
                dtype=np.int64,
                count=len(index),
            )
            return sizes, foot

        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(self.shards)))) as pool:
            parts = list(pool.map(one, range(len(self.shards))))
        for shard, (sizes, _) in enumerate(parts):
            self._sizes.setdefault(shard, sizes)
        empty = np.zeros(0, dtype=np.int64)
        return (
            np.concatenate([p[0] for p in parts]) if parts else empty,
            np.concatenate([p[1] for p in parts]) if parts else empty,
        )

    def key(self, offsets: np.ndarray, gid: int) -> str:
        s = int(np.searchsorted(offsets, gid, side="right") - 1)
        return self.get(s).keys[gid - int(offsets[s])]


def open_shard(
    shard: ShardInfo,
    start: int,
    end: int | None,
    so: dict[str, Any] | None,
    cache: ShardCache | None = None,
    retry: storage.RetryPolicy | None = None,
) -> IO[bytes]:
    """Byte range of a shard; with a node-local cache, the whole shard is fetched once (size/sha256 checked
    against index.json when known) and read locally."""
    url = shard.url
    if cache is not None and not storage.is_local(url):
        url = cache.get(url, so, size=shard.filesize, sha256=shard.sha256)
    return storage.open_stream(url, start, end, so, retry=retry)


def _read_exact(f: IO[bytes], n: int, url: str) -> bytes:
    chunks = []
    left = n
    while left > 0:
        b = f.read(left)
        if not b:
            raise ShardError(
                f"{url}: shard ends early (wanted {n} more bytes); the shard or its .idx is stale"
            )
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _skip(f: IO[bytes], n: int, url: str) -> None:
    while n > 0:
        b = f.read(min(n, 1 << 20))
        if not b:
            raise ShardError(f"{url}: shard ends early while skipping; the shard or its .idx is stale")
        n -= len(b)


def _check_header(header: bytes, size: int, url: str, key: str) -> None:
    """A member header's size field must match the index (catches an ``.idx`` that belongs to another shard)."""
    try:
        hsize = tar.header_size(header)
    except ValueError:
        hsize = -1
    if hsize != size:
        raise ShardError(
            f"{url}: tar header before sample {key!r} does not match its .idx entry (stale index?)"
        )


def _spans(gids: Sequence[int], offsets: np.ndarray, cache: IndexCache) -> Iterator[tuple[int, list[int]]]:
    """Group wanted global ids (in read order) into ``(shard, [local indices])`` spans."""
    cur_shard = -1
    cur: list[int] = []
    for gid in gids:
        s = int(np.searchsorted(offsets, gid, side="right") - 1)
        i = int(gid - offsets[s])
        if cur and s == cur_shard and i > cur[-1]:
            shard = cache.shards[s]
            if shard.compressed:
                cur.append(i)
                continue
            index = cache.get(s)
            prev = index.members[cur[-1]][-1]
            gap = index.members[i][0].offset - 512 - (prev.offset + prev.size)
            if gap < GAP_READ_THROUGH:
                cur.append(i)
                continue
        if cur:
            yield cur_shard, cur
        cur_shard, cur = s, [i]
    if cur:
        yield cur_shard, cur


def _read_plain_span(
    shard: ShardInfo,
    index: ShardIndex,
    wanted: list[int],
    so: dict[str, Any] | None,
    cache: ShardCache | None = None,
    retry: storage.RetryPolicy | None = None,
) -> Iterator[tuple[int, Sample]]:
    first = index.members[wanted[0]][0]
    last = index.members[wanted[-1]][-1]
    start = max(0, first.offset - 512)
    end = last.offset + last.size
    with open_shard(shard, start, end, so, cache, retry) as f:
        pos = start
        for i in wanted:
            sample: Sample = {"__key__": index.keys[i], "__url__": shard.url}
            for m in index.members[i]:
                if m.offset - 512 >= pos:
                    _skip(f, m.offset - 512 - pos, shard.url)
                    _check_header(_read_exact(f, 512, shard.url), m.size, shard.url, index.keys[i])
                else:
                    _skip(f, m.offset - pos, shard.url)
                sample[m.ext] = _read_exact(f, m.size, shard.url)
                pos = m.offset + m.size
            yield i, sample


def _read_compressed_span(
    shard: ShardInfo,
    wanted: list[int],
    so: dict[str, Any] | None,
    cache: ShardCache | None = None,
    retry: storage.RetryPolicy | None = None,
) -> Iterator[tuple[int, Sample]]:
    """Gzipped shards cannot seek: stream from the start, keep the wanted samples (members are read as the
    stream passes them; unwanted samples are dropped at once)."""
    want = set(wanted)
    last = wanted[-1]
    i = -1
    with open_shard(shard, 0, None, so, cache, retry) as raw, gzip.GzipFile(fileobj=raw) as gz:
        scanner = tar.TarScanner(gz)
        members = ((m.name, scanner.data(m)) for m in scanner if m.isreg)
        try:
            for i, (key, group) in enumerate(group_by_key(members)):
                if i in want:
                    yield i, {"__key__": key, "__url__": shard.url, **dict(group)}
                if i >= last:
                    return
        except (tar.TarDamaged, EOFError, zlib.error) as e:
            raise ShardError(f"{storage.redact(shard.url)}: cannot read as a tar shard: {e}") from None
    raise ShardError(f"{shard.url}: has fewer samples than expected ({last + 1} needed, {i + 1} found)")


def read_samples(
    gids: Sequence[int],
    offsets: np.ndarray,
    cache: IndexCache,
    storage_options: dict[str, Any] | None = None,
    shard_cache: ShardCache | None = None,
) -> Iterator[tuple[int, Sample]]:
    """Yield ``(global id, sample dict)`` for ``gids`` in the given order (raw member bytes, not decoded)."""
    for s, wanted in _spans(gids, offsets, cache):
        shard = cache.shards[s]
        base = int(offsets[s])
        if shard.compressed:
            it = _read_compressed_span(shard, wanted, storage_options, shard_cache, cache.retry)
        else:
            it = _read_plain_span(shard, cache.get(s), wanted, storage_options, shard_cache, cache.retry)
        for i, sample in it:
            yield base + i, sample


def json_field(
    shards: Sequence[ShardInfo],
    name: str,
    storage_options: dict[str, Any] | None = None,
    threads: int = 16,
    retry: storage.RetryPolicy | None = None,
) -> list[Any]:
    """The value of JSON field ``name`` of every sample, in global id order (``None`` where the sample has no
    JSON member, the JSON does not parse or lacks the field). Reads only the JSON members (by ``.idx``
    offsets, one positional read each, shards in ``threads`` parallel threads), never an image."""
    from concurrent.futures import ThreadPoolExecutor

    def one(shard: ShardInfo) -> list[Any]:
        index = load_shard_index(shard, storage_options, retry)
        values: list[Any] = [None] * len(index)
        wanted = [(i, m) for i, ms in enumerate(index.members) for m in ms if m.ext == "json"]
        if not wanted:
            return values
        if shard.compressed:
            it = _read_compressed_span(shard, [i for i, _ in wanted], storage_options, retry=retry)
            raws = {i: s.get("json") for i, s in it}
        else:
            reader = storage.RangeReader(shard.url, storage_options, retry=retry)
            try:
                raws = {i: reader.read(m.offset, m.size) for i, m in wanted}
            finally:
                reader.close()
        for i, raw in raws.items():
            try:
                doc = json.loads(raw) if raw is not None else None
            except ValueError:
                continue
            if isinstance(doc, dict):
                value = doc.get(name)
                values[i] = (
                    value
                    if isinstance(value, str | int | float | bool) or value is None
                    else json.dumps(value, sort_keys=True)
                )
        return values

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards)))) as pool:
        return [v for part in pool.map(one, shards) for v in part]
